package org.sellerconnector.keycloak.webhook;

/**
 * What an admin event means for seller-connector, read from its resource type, operation and
 * path alone (before any lookup).
 *
 * @param kind the payload's {@code kind}: {@code user-updated} (resolved to
 *     {@code enabled}/{@code disabled} against the user), {@code deleted}, {@code group-added},
 *     {@code group-removed}, {@code roles-added}, {@code roles-removed} (client roles mapped to
 *     or from a user, or a group when {@link #aboutGroup()}), {@code organization-joined},
 *     {@code organization-left}
 * @param userId the user concerned (null for a group's role mapping)
 * @param groupId the group concerned (group membership and group role mappings)
 * @param clientUuid the internal id of the client whose roles were mapped
 * @param organizationId the organization concerned (membership)
 */
public record AdminChange(String kind, String userId, String groupId, String clientUuid,
                          String organizationId) {

    /** @return whether the change is about a group rather than a user */
    public boolean aboutGroup() {
        return userId == null;
    }
}
