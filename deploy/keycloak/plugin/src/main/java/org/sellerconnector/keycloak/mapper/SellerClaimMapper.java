package org.sellerconnector.keycloak.mapper;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.keycloak.models.ClientModel;
import org.keycloak.models.ClientSessionContext;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.ProtocolMapperModel;
import org.keycloak.models.RealmModel;
import org.keycloak.models.RoleModel;
import org.keycloak.models.UserModel;
import org.keycloak.models.UserSessionModel;
import org.keycloak.models.utils.RoleUtils;
import org.keycloak.protocol.oidc.mappers.AbstractOIDCProtocolMapper;
import org.keycloak.protocol.oidc.mappers.OIDCAccessTokenMapper;
import org.keycloak.protocol.oidc.mappers.OIDCAttributeMapperHelper;
import org.keycloak.protocol.oidc.mappers.OIDCIDTokenMapper;
import org.keycloak.protocol.oidc.mappers.TokenIntrospectionTokenMapper;
import org.keycloak.protocol.oidc.mappers.UserInfoTokenMapper;
import org.keycloak.provider.ProviderConfigProperty;
import org.keycloak.representations.IDToken;
import org.sellerconnector.keycloak.SellerNames;

/**
 * The {@code seller-claim-mapper} OIDC protocol mapper: puts {@link SellerClaim} into the
 * access token, ID token, userinfo and introspection of seller users (users with a seller id
 * attribute), computed from the user's effective roles of the portal client: direct, through
 * groups (and their parents), and through composites. Other users get no claim.
 *
 * <p>Mapper config: {@code claim.name} ({@code seller}), {@code portal.client.id}
 * ({@code seller-portal}), {@code seller.id.attribute} and {@code seller.role.attribute}, and
 * Keycloak's usual "add to access token / ID token / ..." switches.
 */
public final class SellerClaimMapper extends AbstractOIDCProtocolMapper
        implements OIDCAccessTokenMapper, OIDCIDTokenMapper, UserInfoTokenMapper,
        TokenIntrospectionTokenMapper {

    /** The mapper's provider id. */
    public static final String ID = "seller-claim-mapper";
    /** Config key of the client whose roles are the permissions. */
    public static final String PORTAL_CLIENT = "portal.client.id";
    /** Config key of the seller id attribute. */
    public static final String SELLER_ID_ATTRIBUTE = "seller.id.attribute";
    /** Config key of the role attribute. */
    public static final String ROLE_ATTRIBUTE = "seller.role.attribute";

    private static final List<ProviderConfigProperty> CONFIG = new ArrayList<>();

    static {
        OIDCAttributeMapperHelper.addTokenClaimNameConfig(CONFIG);
        CONFIG.add(property(PORTAL_CLIENT, "Portal client",
                "Client whose client roles (category:level) are the permissions",
                SellerNames.DEFAULT.portalClientId()));
        CONFIG.add(property(SELLER_ID_ATTRIBUTE, "Seller id attribute",
                "User attribute holding the seller id", SellerNames.DEFAULT.sellerIdAttribute()));
        CONFIG.add(property(ROLE_ATTRIBUTE, "Seller role attribute",
                "User attribute holding primary or secondary", SellerNames.DEFAULT.roleAttribute()));
        OIDCAttributeMapperHelper.addIncludeInTokensConfig(CONFIG, SellerClaimMapper.class);
    }

    private static ProviderConfigProperty property(String name, String label, String help,
                                                   String defaultValue) {
        ProviderConfigProperty property = new ProviderConfigProperty();
        property.setName(name);
        property.setLabel(label);
        property.setHelpText(help);
        property.setType(ProviderConfigProperty.STRING_TYPE);
        property.setDefaultValue(defaultValue);
        return property;
    }

    @Override
    public String getId() {
        return ID;
    }

    @Override
    public String getDisplayType() {
        return "Seller claim (seller-connector)";
    }

    @Override
    public String getDisplayCategory() {
        return TOKEN_MAPPER_CATEGORY;
    }

    @Override
    public String getHelpText() {
        return "Adds a compact 'seller' claim: seller id, role and the highest level per "
                + "permission category, from the user's effective portal client roles.";
    }

    @Override
    public List<ProviderConfigProperty> getConfigProperties() {
        return CONFIG;
    }

    @Override
    protected void setClaim(IDToken token, ProtocolMapperModel mapping,
                            UserSessionModel userSession, KeycloakSession session,
                            ClientSessionContext clientSessionCtx) {
        UserModel user = userSession == null ? null : userSession.getUser();
        if (user == null) {
            return;
        }
        Map<String, String> config = mapping.getConfig();
        String sellerId = user.getFirstAttribute(
                value(config, SELLER_ID_ATTRIBUTE, SellerNames.DEFAULT.sellerIdAttribute()));
        if (sellerId == null || sellerId.isBlank()) {
            return;
        }
        String role = user.getFirstAttribute(
                value(config, ROLE_ATTRIBUTE, SellerNames.DEFAULT.roleAttribute()));
        RealmModel realm = userSession.getRealm();
        ClientModel portal = realm.getClientByClientId(
                value(config, PORTAL_CLIENT, SellerNames.DEFAULT.portalClientId()));
        List<String> names = new ArrayList<>();
        if (portal != null) {
            Set<RoleModel> effective =
                    RoleUtils.expandCompositeRoles(RoleUtils.getDeepUserRoleMappings(user));
            for (RoleModel roleModel : effective) {
                if (roleModel.isClientRole() && portal.getId().equals(roleModel.getContainerId())) {
                    names.add(roleModel.getName());
                }
            }
        }
        String claimName = value(config, OIDCAttributeMapperHelper.TOKEN_CLAIM_NAME, "seller");
        token.getOtherClaims().put(claimName, SellerClaim.compute(sellerId, role, names));
    }

    private static String value(Map<String, String> config, String key, String fallback) {
        String value = config == null ? null : config.get(key);
        return value == null || value.isBlank() ? fallback : value.trim();
    }
}
