package org.sellerconnector.keycloak;

import java.util.LinkedHashMap;
import java.util.Map;

import org.keycloak.models.UserModel;

/**
 * A Keycloak user as seller-connector sees it: its seller id, role and connector id, read from
 * the user's attributes. Users without a seller id are not seller users.
 *
 * @param id Keycloak's user id
 * @param username the username
 * @param sellerId the seller account id
 * @param role {@code primary} or {@code secondary} (may be null)
 * @param connectorUserId seller-connector's own user id (may be null)
 */
public record SellerUser(String id, String username, String sellerId, String role,
                         String connectorUserId) {

    /** The value of the role attribute of a seller's primary user. */
    public static final String PRIMARY = "primary";

    /**
     * Read a user's seller attributes.
     *
     * @param user the user, may be null
     * @param names the attribute names
     * @return the seller user, or null when the user is null or carries no seller id
     */
    public static SellerUser of(UserModel user, SellerNames names) {
        if (user == null) {
            return null;
        }
        String sellerId = user.getFirstAttribute(names.sellerIdAttribute());
        if (sellerId == null || sellerId.isBlank()) {
            return null;
        }
        return new SellerUser(user.getId(), user.getUsername(), sellerId,
                user.getFirstAttribute(names.roleAttribute()),
                user.getFirstAttribute(names.connectorIdAttribute()));
    }

    /** @return whether this is the seller's primary user */
    public boolean isPrimary() {
        return PRIMARY.equals(role);
    }

    /** @return the user as the webhook payload's {@code user} object */
    public Map<String, Object> toJson() {
        Map<String, Object> json = new LinkedHashMap<>();
        json.put("id", id);
        json.put("username", username);
        json.put("seller_id", sellerId);
        json.put("seller_role", role);
        json.put("connector_user_id", connectorUserId);
        return json;
    }
}
