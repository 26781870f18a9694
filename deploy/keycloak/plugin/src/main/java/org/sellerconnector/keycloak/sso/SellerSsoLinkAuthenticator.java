package org.sellerconnector.keycloak.sso;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import jakarta.ws.rs.core.Response;

import org.jboss.logging.Logger;
import org.keycloak.authentication.AuthenticationFlowContext;
import org.keycloak.authentication.AuthenticationFlowError;
import org.keycloak.authentication.authenticators.broker.AbstractIdpAuthenticator;
import org.keycloak.authentication.authenticators.broker.util.SerializedBrokeredIdentityContext;
import org.keycloak.broker.provider.BrokeredIdentityContext;
import org.keycloak.events.Errors;
import org.keycloak.models.IdentityProviderModel;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.OrganizationDomainModel;
import org.keycloak.models.OrganizationModel;
import org.keycloak.models.RealmModel;
import org.keycloak.models.UserModel;
import org.keycloak.organization.OrganizationProvider;
import org.keycloak.services.messages.Messages;
import org.sellerconnector.keycloak.SellerNames;
import org.sellerconnector.keycloak.SellerUser;

/**
 * The only step of the sellers' first-broker-login flow: link the corporate login to the user
 * that SCIM provisioned with the same email, never create an account. See
 * {@link SsoLinkPolicy} for when it refuses; a refusal shows Keycloak's error page and records
 * an {@code IDENTITY_PROVIDER_FIRST_LOGIN_ERROR}-style event error.
 */
public final class SellerSsoLinkAuthenticator extends AbstractIdpAuthenticator {

    private static final Logger LOG = Logger.getLogger(SellerSsoLinkAuthenticator.class);

    private final SellerNames names;

    /**
     * @param names the seller attribute names
     */
    public SellerSsoLinkAuthenticator(SellerNames names) {
        this.names = names;
    }

    @Override
    protected void authenticateImpl(AuthenticationFlowContext context,
                                    SerializedBrokeredIdentityContext serializedCtx,
                                    BrokeredIdentityContext brokerContext) {
        KeycloakSession session = context.getSession();
        RealmModel realm = context.getRealm();
        IdentityProviderModel idp = brokerContext.getIdpConfig();
        String email = brokerContext.getEmail();
        OrganizationModel organization = organizationOf(session, idp);
        String organizationSellerId = organization == null ? null
                : first(organization.getAttributes(), names.sellerIdAttribute());
        UserModel user = email == null ? null : session.users().getUserByEmail(realm, email);
        SellerUser seller = SellerUser.of(user, names);
        SsoLinkPolicy.Refusal refusal = SsoLinkPolicy.check(email, domains(idp, organization),
                organizationSellerId, seller == null ? null : seller.sellerId(),
                user != null && user.isEnabled(), user != null);
        if (refusal == null) {
            context.setUser(user);
            context.success();
            return;
        }
        LOG.infof("refused to link a login through identity provider %s: %s", idp.getAlias(),
                refusal);
        if (refusal == SsoLinkPolicy.Refusal.DISABLED) {
            sendFailureChallenge(context, Response.Status.FORBIDDEN, Errors.USER_DISABLED,
                    Messages.ACCOUNT_DISABLED, AuthenticationFlowError.USER_DISABLED);
            return;
        }
        context.getEvent().detail("reason", refusal.name()).error(Errors.USER_NOT_FOUND);
        Response page = context.form()
                .setError(Messages.FEDERATED_IDENTITY_UNAVAILABLE,
                        email == null ? "" : email, idp.getAlias())
                .createErrorPage(Response.Status.UNAUTHORIZED);
        context.failureChallenge(AuthenticationFlowError.UNKNOWN_USER, page);
    }

    @Override
    protected void actionImpl(AuthenticationFlowContext context,
                              SerializedBrokeredIdentityContext serializedCtx,
                              BrokeredIdentityContext brokerContext) {
        authenticateImpl(context, serializedCtx, brokerContext);
    }

    private static OrganizationModel organizationOf(KeycloakSession session,
                                                    IdentityProviderModel idp) {
        String id = idp.getOrganizationId();
        OrganizationProvider organizations = session.getProvider(OrganizationProvider.class);
        return id == null || organizations == null ? null : organizations.getById(id);
    }

    /** The IdP's domain, or all of the organization's domains when it says ANY. */
    private static List<String> domains(IdentityProviderModel idp, OrganizationModel organization) {
        List<String> domains = new ArrayList<>();
        String domain = idp.getConfig().get(OrganizationModel.ORGANIZATION_DOMAIN_ATTRIBUTE);
        if (OrganizationDomainModel.ANY_DOMAIN.equals(domain) && organization != null) {
            organization.getDomains().map(OrganizationDomainModel::getName).forEach(domains::add);
        } else if (domain != null) {
            domains.add(domain);
        }
        return domains;
    }

    private static String first(Map<String, List<String>> attributes, String name) {
        List<String> values = attributes == null ? null : attributes.get(name);
        return values == null || values.isEmpty() ? null : values.get(0);
    }

    @Override
    public boolean requiresUser() {
        return false;
    }

    @Override
    public boolean configuredFor(KeycloakSession session, RealmModel realm, UserModel user) {
        return true;
    }
}
