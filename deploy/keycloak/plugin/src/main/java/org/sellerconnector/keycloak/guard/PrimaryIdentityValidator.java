package org.sellerconnector.keycloak.guard;

import java.util.UUID;
import java.util.function.Consumer;

import jakarta.ws.rs.core.Response;

import org.jboss.logging.Logger;
import org.keycloak.Token;
import org.keycloak.events.EventListenerProvider;
import org.keycloak.models.ClientModel;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.RealmModel;
import org.keycloak.models.UserModel;
import org.keycloak.provider.ProviderFactory;
import org.keycloak.representations.JsonWebToken;
import org.keycloak.userprofile.AttributeContext;
import org.keycloak.userprofile.UserProfileAttributeValidationContext;
import org.keycloak.validate.SimpleValidator;
import org.keycloak.validate.ValidationContext;
import org.keycloak.validate.ValidationError;
import org.keycloak.validate.ValidatorConfig;
import org.sellerconnector.keycloak.SellerNames;
import org.sellerconnector.keycloak.SellerUser;
import org.sellerconnector.keycloak.webhook.SellerWebhookEventListenerProviderFactory;
import org.sellerconnector.keycloak.webhook.WebhookPayload;

/**
 * The {@code seller-primary-identity} user profile validator: refuses to change a seller's
 * primary user's {@code username} or {@code email} (or to remove its email) unless
 * seller-connector's own service account asks, as its verified change-primary flow does. On
 * {@code username} and {@code email} it covers every seller user, secondary ones too
 * ({@code "applies-to": "seller"}, the default there): the connector owns the usernames and
 * emails it provisions (a user's userName and primary email, which the seller's SCIM client or
 * directory sync changes), so the realm lets admins edit usernames ({@code editUsernameAllowed},
 * the user profile's edit permission {@code admin} only) for the connector's renames to go
 * through, and this guard keeps an administrator's rename or new address of a seller user out,
 * and the user's own new address (account console, update-profile, the update-email required
 * action). Set on the seller attributes with {@code "applies-to":
 * "everyone"}, it refuses any change of them on any user, on creation too: otherwise an
 * administrator could demote the primary ({@code seller_role}) and then change its email, or tag
 * any user as a seller's primary and give it the seller's tokens.
 *
 * <p>Keycloak publishes no event before a user is updated, but it validates every create and
 * update through the realm's user profile, whoever asks: the admin console and admin REST API,
 * the account console, the update-profile and update-email required actions. So the guard is a
 * validator, configured on those attributes in the realm's user profile
 * ({@code realm-sellers.json} does; Realm settings, User profile otherwise). A refusal answers
 * 400 with the attribute and the message, which the admin console shows next to the field;
 * nothing of the request is applied.
 *
 * <p><b>How the connector's own writes are told apart.</b> The admin REST API puts the caller's
 * access token into the session ({@code KeycloakContext#getBearerToken}). A write is the
 * connector's when that token was issued by this realm to the connector's client ({@code azp},
 * {@code connector-client-id}, default {@code seller-connector}) and its subject is that
 * client's service account user. Only the holder of that client's secret gets such a token (the
 * client allows no browser or password login), unlike a user attribute or a flag in the
 * request, which any administrator could set.
 */
public final class PrimaryIdentityValidator implements SimpleValidator {

    /** The validator id, as the user profile configuration names it. */
    public static final String ID = "seller-primary-identity";
    /**
     * Validator option: {@code primary}, {@code seller} or {@code everyone}; when not set,
     * {@code seller} on {@code username} and {@code email}, {@code primary} elsewhere
     * ({@link PrimaryIdentityPolicy#scope}).
     */
    public static final String APPLIES_TO = "applies-to";

    /** The message of a refused change of a primary's username or email. */
    public static final String REFUSED =
            "This user is the primary user of seller account %s: its username and email change "
            + "only through the marketplace operator's verified flow (seller-connector sellers "
            + "change-primary).";
    /** The message of a refused change of a secondary seller user's username or email. */
    public static final String SELLER_REFUSED =
            "This user's %s is provisioned by seller-connector for seller account %s: it changes "
            + "there (through the seller's SCIM client or directory sync), and seller-connector "
            + "brings it here.";
    /** The message of a refused change of a seller attribute. */
    public static final String ATTRIBUTE_REFUSED =
            "The attribute %s is set by seller-connector only: a user's seller and role change "
            + "through SCIM, and the primary user only through the marketplace operator's "
            + "verified flow (seller-connector sellers change-primary).";

    private static final Logger LOG = Logger.getLogger(PrimaryIdentityValidator.class);
    private static final String REPORTED = "seller-connector.identity-refused.";

    @Override
    public String getId() {
        return ID;
    }

    @Override
    public ValidationContext validate(Object input, String inputHint, ValidationContext context,
                                      ValidatorConfig config) {
        if (!(context instanceof UserProfileAttributeValidationContext profile)) {
            return context; // not a user profile validation: nothing to guard
        }
        AttributeContext attribute = profile.getAttributeContext();
        KeycloakSession session = context.getSession();
        if (attribute == null || session == null) {
            return context;
        }
        String name = attribute.getMetadata() == null ? inputHint : attribute.getMetadata().getName();
        PrimaryIdentityPolicy.Scope scope = PrimaryIdentityPolicy.scope(
                config == null ? null : config.getStringOrDefault(APPLIES_TO, null), name);
        boolean everyone = scope == PrimaryIdentityPolicy.Scope.EVERYONE;
        UserModel model = attribute.getUser(); // null while the user is being created
        SellerWebhookEventListenerProviderFactory webhook = webhook(session);
        SellerNames names = webhook == null ? SellerNames.DEFAULT : webhook.config().names();
        SellerUser user = SellerUser.of(model, names);
        boolean guarded = PrimaryIdentityPolicy.guarded(scope, user != null,
                user != null && user.isPrimary());
        boolean identity = UserModel.USERNAME.equals(name) || UserModel.EMAIL.equals(name);
        String current = model == null ? null
                : UserModel.USERNAME.equals(name) ? model.getUsername()
                : UserModel.EMAIL.equals(name) ? model.getEmail() : model.getFirstAttribute(name);
        if (!guarded || !PrimaryIdentityPolicy.changes(current, input, identity)) {
            return context; // unguarded or unchanged: any other edit goes through
        }
        if (PrimaryIdentityPolicy.refuse(guarded, true, byConnector(session, names))) {
            if (user != null) {
                report(session, user, name,
                        webhook == null || webhook.sender() == null ? null : webhook.sender()::submit);
            }
            String message = everyone ? String.format(ATTRIBUTE_REFUSED, name)
                    : user.isPrimary() ? String.format(REFUSED, user.sellerId())
                    : String.format(SELLER_REFUSED, name, user.sellerId());
            context.addError(new ValidationError(ID, inputHint, message)
                    .setStatusCode(Response.Status.FORBIDDEN));
        }
        return context;
    }

    /** Whether the request carries the connector's own service account token (see above). */
    static boolean byConnector(KeycloakSession session, SellerNames names) {
        Token token = session.getContext().getBearerToken();
        RealmModel realm = session.getContext().getRealm();
        if (!(token instanceof JsonWebToken jwt) || realm == null) {
            return false;
        }
        if (!names.connectorClientId().equals(jwt.getIssuedFor())) {
            return false;
        }
        String issuer = jwt.getIssuer();
        if (issuer == null || !issuer.endsWith("/realms/" + realm.getName())) {
            return false;
        }
        ClientModel client = realm.getClientByClientId(names.connectorClientId());
        UserModel account = client == null ? null : session.users().getServiceAccount(client);
        return account != null && account.getId().equals(jwt.getSubject());
    }

    private static SellerWebhookEventListenerProviderFactory webhook(KeycloakSession session) {
        ProviderFactory<?> factory = session.getKeycloakSessionFactory().getProviderFactory(
                EventListenerProvider.class, SellerWebhookEventListenerProviderFactory.ID);
        return factory instanceof SellerWebhookEventListenerProviderFactory webhook ? webhook : null;
    }

    private static void report(KeycloakSession session, SellerUser user, String attribute,
                               Consumer<WebhookPayload> refusals) {
        // Keycloak may validate an update more than once: report it once per request.
        String key = REPORTED + user.id() + "." + attribute;
        if (session.getAttribute(key) != null) {
            return;
        }
        session.setAttribute(key, Boolean.TRUE);
        LOG.infof("refused to change the %s of the %s user %s of seller %s", attribute,
                user.isPrimary() ? "primary" : "secondary", user.id(), user.sellerId());
        if (refusals != null) {
            RealmModel realm = session.getContext().getRealm();
            refusals.accept(new WebhookPayload(UUID.randomUUID().toString(), "guard",
                    "identity-change-refused", "identity-change-refused",
                    System.currentTimeMillis(), realm == null ? null : realm.getName())
                    .with("user", user.toJson())
                    .with("attribute", attribute));
        }
    }
}
