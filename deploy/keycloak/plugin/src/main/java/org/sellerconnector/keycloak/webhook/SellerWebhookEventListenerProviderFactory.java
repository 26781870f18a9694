package org.sellerconnector.keycloak.webhook;

import java.util.List;

import org.jboss.logging.Logger;
import org.keycloak.Config;
import org.keycloak.events.EventListenerProvider;
import org.keycloak.events.EventListenerProviderFactory;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.KeycloakSessionFactory;
import org.keycloak.provider.ProviderConfigProperty;
import org.keycloak.provider.ProviderConfigurationBuilder;
import org.sellerconnector.keycloak.guard.PrimaryUserGuard;

/**
 * The {@code seller-connector-webhook} event listener, and the home of the primary-user guard.
 *
 * <p>Enable the listener per realm (realm settings, events, event listeners; the project's
 * {@code realm-sellers.json} does). The guard needs no realm setting: it is registered with the
 * session factory at start and applies to every realm's seller users.
 *
 * <p>Configuration ({@code --spi-events-listener--seller-connector-webhook--<key>=...}, or the
 * environment variables named in {@link WebhookConfig}): {@code url}, {@code secret},
 * {@code secret-file}, {@code queue-size} (1000), {@code connect-timeout-ms} (2000),
 * {@code request-timeout-ms} (5000), {@code attempts} (2), {@code ignore-clients}
 * ({@code seller-connector}), and the seller names of {@link org.sellerconnector.keycloak.SellerNames}
 * ({@code connector-client-id}, {@code permission-set-id-attribute}, ...), which the guard's
 * user profile validator reads from here too.
 */
public final class SellerWebhookEventListenerProviderFactory implements EventListenerProviderFactory {

    /** The provider id, as realms list it in their event listeners. */
    public static final String ID = "seller-connector-webhook";

    private static final Logger LOG = Logger.getLogger(SellerWebhookEventListenerProviderFactory.class);

    private WebhookConfig config;
    private WebhookSender sender;

    @Override
    public EventListenerProvider create(KeycloakSession session) {
        return new SellerWebhookEventListenerProvider(session, config, sender);
    }

    @Override
    public void init(Config.Scope scope) {
        config = WebhookConfig.from(scope::get, System.getenv());
        if (config.enabled()) {
            sender = new WebhookSender(config);
            LOG.infof("seller-connector webhook on: %s", config);
        } else {
            LOG.infof("seller-connector webhook off (%s); the guard still applies", config.problem());
        }
    }

    /** @return the configuration read at start (the guard's validator reads its names) */
    public WebhookConfig config() {
        return config;
    }

    /** @return where payloads are posted, or null when the webhook is off */
    public WebhookSender sender() {
        return sender;
    }

    @Override
    public void postInit(KeycloakSessionFactory factory) {
        factory.register(new PrimaryUserGuard(config.names(), sender == null ? null : sender::submit));
    }

    @Override
    public void close() {
        if (sender != null) {
            sender.close();
        }
    }

    @Override
    public String getId() {
        return ID;
    }

    @Override
    public List<ProviderConfigProperty> getConfigMetadata() {
        return ProviderConfigurationBuilder.create()
                .property().name("url").type("string")
                .helpText("The connector's webhook URL (else SELLER_CONNECTOR_WEBHOOK_URL)").add()
                .property().name("secret").type("password")
                .helpText("The HMAC secret (else SELLER_CONNECTOR_WEBHOOK_SECRET[_FILE])").add()
                .property().name("secret-file").type("string")
                .helpText("A file holding the HMAC secret").add()
                .property().name("queue-size").type("int").defaultValue(1000)
                .helpText("Posts that may wait; more are dropped").add()
                .property().name("connect-timeout-ms").type("int").defaultValue(2000)
                .helpText("TCP connect timeout").add()
                .property().name("request-timeout-ms").type("int").defaultValue(5000)
                .helpText("Timeout of one post").add()
                .property().name("attempts").type("int").defaultValue(2)
                .helpText("Tries per post (connection errors and 5xx)").add()
                .property().name("ignore-clients").type("string").defaultValue("seller-connector")
                .helpText("Comma-separated client ids whose admin calls are not reported").add()
                .property().name("connector-client-id").type("string")
                .defaultValue("seller-connector")
                .helpText("The connector's client: its service account alone may change a "
                        + "seller's primary user's username and email").add()
                .property().name("permission-set-id-attribute").type("string")
                .defaultValue("permission_set_id")
                .helpText("Group attribute holding the connector's permission set id").add()
                .build();
    }
}
