package org.sellerconnector.keycloak.bulk;

import java.util.List;

import org.jboss.logging.Logger;
import org.keycloak.Config;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.KeycloakSessionFactory;
import org.keycloak.provider.ProviderConfigProperty;
import org.keycloak.provider.ProviderConfigurationBuilder;
import org.keycloak.services.resource.RealmResourceProvider;
import org.keycloak.services.resource.RealmResourceProviderFactory;
import org.sellerconnector.keycloak.SellerNames;

/**
 * The {@code seller-connector} realm resource: {@code /realms/{realm}/seller-connector}, the
 * connector's bulk path (see {@link SellerUsersResource}).
 *
 * <p>Configuration ({@code --spi-realm-restapi-extension--seller-connector--<key>=...}):
 * {@code max-users} (500, users per request) and the seller names of {@link SellerNames}
 * ({@code connector-client-id}, {@code portal-client-id}, {@code group-root}, the attribute
 * names), whose defaults are the project's {@code mappings/idp.yaml}.
 */
public final class SellerUsersResourceProviderFactory implements RealmResourceProviderFactory {

    /** The provider id: the path segment after {@code /realms/{realm}/}. */
    public static final String ID = "seller-connector";
    static final int DEFAULT_MAX_USERS = 500;

    private static final Logger LOG = Logger.getLogger(SellerUsersResourceProviderFactory.class);

    private SellerNames names = SellerNames.DEFAULT;
    private int maxUsers = DEFAULT_MAX_USERS;

    @Override
    public RealmResourceProvider create(KeycloakSession session) {
        return new RealmResourceProvider() {
            @Override
            public Object getResource() {
                return new SellerUsersResource(session, names, maxUsers);
            }

            @Override
            public void close() {
                // nothing held
            }
        };
    }

    @Override
    public void init(Config.Scope scope) {
        names = SellerNames.from(scope::get);
        maxUsers = Math.max(1, scope.getInt("max-users", DEFAULT_MAX_USERS));
        LOG.infof("seller-connector bulk users endpoint on (at most %d users per request, for "
                + "the %s service account)", maxUsers, names.connectorClientId());
    }

    @Override
    public void postInit(KeycloakSessionFactory factory) {
        // nothing to register
    }

    @Override
    public void close() {
        // nothing held
    }

    @Override
    public String getId() {
        return ID;
    }

    @Override
    public List<ProviderConfigProperty> getConfigMetadata() {
        return ProviderConfigurationBuilder.create()
                .property().name("max-users").type("int").defaultValue(DEFAULT_MAX_USERS)
                .helpText("Users per request, at most").add()
                .property().name("connector-client-id").type("string")
                .defaultValue("seller-connector")
                .helpText("The client whose service account alone may call the endpoint").add()
                .property().name("portal-client-id").type("string").defaultValue("seller-portal")
                .helpText("The client whose roles are the permissions").add()
                .property().name("group-root").type("string").defaultValue("sellers")
                .helpText("The top-level group of the sellers' groups").add()
                .build();
    }
}
