package org.sellerconnector.keycloak.guard;

import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.function.Consumer;

import jakarta.ws.rs.core.Response;

import org.jboss.logging.Logger;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.OrganizationModel;
import org.keycloak.models.RealmModel;
import org.keycloak.models.UserModel;
import org.keycloak.provider.ProviderEvent;
import org.keycloak.provider.ProviderEventListener;
import org.keycloak.services.ErrorResponse;
import org.sellerconnector.keycloak.SellerNames;
import org.sellerconnector.keycloak.SellerUser;
import org.sellerconnector.keycloak.webhook.WebhookPayload;

/**
 * Refuses to delete a seller's primary user, or to remove it from its seller's organization,
 * whoever asks (admin console, admin API, account console): the primary changes only through
 * seller-connector's verified operator flow.
 *
 * <p>An event listener cannot veto anything, so this hooks Keycloak's provider events, which
 * are published inside the transaction of the change: {@link UserModel.UserPreRemovedEvent}
 * (published by the user storage manager before a user is removed) and
 * {@link OrganizationModel.OrganizationMemberLeaveEvent}. Throwing there aborts the request;
 * the {@code ErrorResponseException} marks the transaction rollback-only and answers 403 with
 * {@code {"errorMessage": "..."}}, which the admin console shows.
 *
 * <p>For a seller user that may be deleted, it remembers the user's seller attributes in the
 * session so that the webhook can still report the deletion once the user is gone.
 */
public final class PrimaryUserGuard implements ProviderEventListener {

    /** The message when deleting a primary user is refused. */
    public static final String DELETE_REFUSED =
            "This user is the primary user of seller account %s and cannot be deleted here: "
            + "the primary user changes only through the marketplace operator's verified flow "
            + "(seller-connector sellers change-primary).";
    /** The message when removing a primary user from its organization is refused. */
    public static final String LEAVE_REFUSED =
            "This user is the primary user of seller account %s and cannot be removed from its "
            + "organization: the primary user changes only through the marketplace operator's "
            + "verified flow (seller-connector sellers change-primary).";

    private static final Logger LOG = Logger.getLogger(PrimaryUserGuard.class);
    private static final String REMOVED_ATTRIBUTE = "seller-connector.removed-user.";

    private final SellerNames names;
    private final Consumer<WebhookPayload> refusals;

    /**
     * @param names the seller names
     * @param refusals where refused attempts are reported (the webhook), or null
     */
    public PrimaryUserGuard(SellerNames names, Consumer<WebhookPayload> refusals) {
        this.names = names;
        this.refusals = refusals;
    }

    @Override
    public void onEvent(ProviderEvent event) {
        if (event instanceof UserModel.UserPreRemovedEvent removed) {
            onUserRemoval(removed.getKeycloakSession(), removed.getRealm(), removed.getUser());
        } else if (event instanceof OrganizationModel.OrganizationMemberLeaveEvent left) {
            onMemberLeave(left.getSession(), left.getOrganization(), left.getUser());
        }
    }

    private void onUserRemoval(KeycloakSession session, RealmModel realm, UserModel model) {
        SellerUser user = SellerUser.of(model, names);
        if (user == null) {
            return;
        }
        if (user.isPrimary()) {
            refuse(realm, user, "delete-refused", DELETE_REFUSED);
        }
        if (session != null) {
            session.setAttribute(REMOVED_ATTRIBUTE + user.id(), user);
        }
    }

    private void onMemberLeave(KeycloakSession session, OrganizationModel organization,
                               UserModel model) {
        SellerUser user = SellerUser.of(model, names);
        if (user == null || !user.isPrimary() || !isSellersOrganization(organization, user)) {
            return;
        }
        RealmModel realm = session == null ? null : session.getContext().getRealm();
        refuse(realm, user, "leave-refused", LEAVE_REFUSED);
    }

    /**
     * Whether an organization is the seller's own: its {@code seller_id} attribute or its
     * alias ({@code seller-<id>}) names the user's seller.
     */
    private boolean isSellersOrganization(OrganizationModel organization, SellerUser user) {
        if (organization == null) {
            return false;
        }
        Map<String, List<String>> attributes = organization.getAttributes();
        List<String> ids = attributes == null ? null : attributes.get(names.sellerIdAttribute());
        return (ids != null && ids.contains(user.sellerId()))
                || (names.organizationAliasPrefix() + user.sellerId()).equals(organization.getAlias());
    }

    private void refuse(RealmModel realm, SellerUser user, String kind, String message) {
        LOG.infof("refused to %s the primary user %s of seller %s",
                "delete-refused".equals(kind) ? "delete" : "remove from its organization",
                user.id(), user.sellerId());
        if (refusals != null) {
            refusals.accept(new WebhookPayload(UUID.randomUUID().toString(), "guard", kind, kind,
                    System.currentTimeMillis(), realm == null ? null : realm.getName())
                    .with("user", user.toJson()));
        }
        throw ErrorResponse.error(String.format(message, user.sellerId()),
                Response.Status.FORBIDDEN);
    }

    /**
     * The seller attributes of a user deleted in this session (for the webhook's report).
     *
     * @param session the session
     * @param userId the removed user's id
     * @return the user as it was, or null
     */
    public static SellerUser removedSellerUser(KeycloakSession session, String userId) {
        Object value = session.getAttribute(REMOVED_ATTRIBUTE + userId);
        return value instanceof SellerUser user ? user : null;
    }
}
