package org.sellerconnector.keycloak;

import java.util.Objects;
import java.util.function.Function;

/**
 * The names under which seller-connector stores sellers in Keycloak: user and group attributes,
 * the root group of permission sets, the portal client, the connector's own client and the
 * organization alias prefix.
 *
 * <p>The defaults are those of the project's {@code mappings/idp.yaml}; each can be overridden
 * through the provider's SPI configuration (for example {@code seller-id-attribute}).
 */
public final class SellerNames {

    /** The defaults of {@code mappings/idp.yaml}. */
    public static final SellerNames DEFAULT =
            new SellerNames("seller_id", "seller_role", "seller_connector_user_id", "sellers",
                    "seller-portal", "seller-", "permission_set_id", "seller-connector");

    private final String sellerIdAttribute;
    private final String roleAttribute;
    private final String connectorIdAttribute;
    private final String groupRoot;
    private final String portalClientId;
    private final String organizationAliasPrefix;
    private final String permissionSetIdAttribute;
    private final String connectorClientId;

    /**
     * @param sellerIdAttribute user attribute holding the seller id
     * @param roleAttribute user attribute holding {@code primary} or {@code secondary}
     * @param connectorIdAttribute user attribute holding seller-connector's own user id
     * @param groupRoot name of the top-level group of the permission-set groups
     * @param portalClientId client id whose client roles are the permissions
     * @param organizationAliasPrefix organization alias prefix before the seller id
     * @param permissionSetIdAttribute group attribute holding the connector's permission set id
     *     (groups also carry {@code sellerIdAttribute}: their names are display names)
     * @param connectorClientId client id of the connector's own service account client
     */
    public SellerNames(String sellerIdAttribute, String roleAttribute, String connectorIdAttribute,
                       String groupRoot, String portalClientId, String organizationAliasPrefix,
                       String permissionSetIdAttribute, String connectorClientId) {
        this.sellerIdAttribute = Objects.requireNonNull(sellerIdAttribute);
        this.roleAttribute = Objects.requireNonNull(roleAttribute);
        this.connectorIdAttribute = Objects.requireNonNull(connectorIdAttribute);
        this.groupRoot = Objects.requireNonNull(groupRoot);
        this.portalClientId = Objects.requireNonNull(portalClientId);
        this.organizationAliasPrefix = Objects.requireNonNull(organizationAliasPrefix);
        this.permissionSetIdAttribute = Objects.requireNonNull(permissionSetIdAttribute);
        this.connectorClientId = Objects.requireNonNull(connectorClientId);
    }

    /**
     * Read the names from a configuration lookup, falling back to {@link #DEFAULT}.
     *
     * @param config returns a configured value by key, or null
     * @return the names
     */
    public static SellerNames from(Function<String, String> config) {
        return new SellerNames(
                or(config.apply("seller-id-attribute"), DEFAULT.sellerIdAttribute),
                or(config.apply("seller-role-attribute"), DEFAULT.roleAttribute),
                or(config.apply("connector-id-attribute"), DEFAULT.connectorIdAttribute),
                or(config.apply("group-root"), DEFAULT.groupRoot),
                or(config.apply("portal-client-id"), DEFAULT.portalClientId),
                or(config.apply("organization-alias-prefix"), DEFAULT.organizationAliasPrefix),
                or(config.apply("permission-set-id-attribute"), DEFAULT.permissionSetIdAttribute),
                or(config.apply("connector-client-id"), DEFAULT.connectorClientId));
    }

    private static String or(String value, String fallback) {
        return value == null || value.isBlank() ? fallback : value.trim();
    }

    public String sellerIdAttribute() {
        return sellerIdAttribute;
    }

    public String roleAttribute() {
        return roleAttribute;
    }

    public String connectorIdAttribute() {
        return connectorIdAttribute;
    }

    public String portalClientId() {
        return portalClientId;
    }

    public String organizationAliasPrefix() {
        return organizationAliasPrefix;
    }

    public String permissionSetIdAttribute() {
        return permissionSetIdAttribute;
    }

    public String connectorClientId() {
        return connectorClientId;
    }

    /**
     * Whether a user attribute is one of the seller attributes that only the connector sets.
     *
     * @param name an attribute name
     * @return true for the seller id, role and connector id attributes
     */
    public boolean isSellerAttribute(String name) {
        return sellerIdAttribute.equals(name) || roleAttribute.equals(name)
                || connectorIdAttribute.equals(name);
    }

    /** @return the name of the top-level group of the permission-set groups */
    public String groupRoot() {
        return groupRoot;
    }

    /**
     * Whether a group path is a permission-set group or a seller's group: {@code /sellers/...}.
     * Group names are display names ({@code /sellers/Acme Inc/Order handlers}); which seller and
     * permission set a group is comes from its attributes, never from its path.
     *
     * @param path a full group path such as {@code /sellers/Acme Inc/Order handlers}
     * @return true under the root group, false for the root itself and anything else
     */
    public boolean isSellerGroupPath(String path) {
        return path != null && path.startsWith("/" + groupRoot + "/");
    }

    /**
     * Whether a group path is the root group itself or under it (roles mapped on the root or on
     * a seller's group are inherited by every permission-set group below).
     *
     * @param path a full group path
     * @return true for {@code /sellers} and anything under it
     */
    public boolean isUnderGroupRoot(String path) {
        return path != null && (path.equals("/" + groupRoot) || isSellerGroupPath(path));
    }
}
