package org.sellerconnector.keycloak.sso;

import java.util.List;

import org.keycloak.Config;
import org.keycloak.authentication.Authenticator;
import org.keycloak.authentication.AuthenticatorFactory;
import org.keycloak.models.AuthenticationExecutionModel;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.KeycloakSessionFactory;
import org.keycloak.provider.ProviderConfigProperty;
import org.sellerconnector.keycloak.SellerNames;

/**
 * The {@code seller-sso-link-existing} authenticator, for a first-broker-login flow that only
 * links corporate logins to provisioned seller users ({@code seller-connector sellers
 * link-sso} creates that flow). Seller names come from the SPI configuration
 * ({@code spi-authenticator--seller-sso-link-existing--seller-id-attribute}, ...).
 */
public final class SellerSsoLinkAuthenticatorFactory implements AuthenticatorFactory {

    /** The authenticator's provider id. */
    public static final String ID = "seller-sso-link-existing";

    private SellerSsoLinkAuthenticator authenticator =
            new SellerSsoLinkAuthenticator(SellerNames.DEFAULT);

    @Override
    public Authenticator create(KeycloakSession session) {
        return authenticator;
    }

    @Override
    public void init(Config.Scope config) {
        authenticator = new SellerSsoLinkAuthenticator(SellerNames.from(config::get));
    }

    @Override
    public void postInit(KeycloakSessionFactory factory) {
        // nothing to do
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
    public String getDisplayType() {
        return "Link provisioned seller user (seller-connector)";
    }

    @Override
    public String getReferenceCategory() {
        return "autoLink";
    }

    @Override
    public boolean isConfigurable() {
        return false;
    }

    @Override
    public AuthenticationExecutionModel.Requirement[] getRequirementChoices() {
        return new AuthenticationExecutionModel.Requirement[] {
            AuthenticationExecutionModel.Requirement.REQUIRED,
            AuthenticationExecutionModel.Requirement.DISABLED
        };
    }

    @Override
    public boolean isUserSetupAllowed() {
        return false;
    }

    @Override
    public String getHelpText() {
        return "Links a corporate login to the enabled user that seller-connector provisioned "
                + "with the same email, for the seller whose organization the identity provider "
                + "belongs to, in one of its linked domains. Never creates a user.";
    }

    @Override
    public List<ProviderConfigProperty> getConfigProperties() {
        return List.of();
    }
}
