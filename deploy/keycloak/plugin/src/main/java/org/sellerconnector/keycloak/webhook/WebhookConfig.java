package org.sellerconnector.keycloak.webhook;

import java.io.IOException;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashSet;
import java.util.Map;
import java.util.Set;
import java.util.function.Function;

import org.sellerconnector.keycloak.SellerNames;

/**
 * Where and how the listener posts: read once at start from the provider's SPI configuration
 * ({@code spi-events-listener--seller-connector-webhook--url} and so on), each falling back to
 * an environment variable ({@code SELLER_CONNECTOR_WEBHOOK_URL},
 * {@code SELLER_CONNECTOR_WEBHOOK_SECRET} or {@code SELLER_CONNECTOR_WEBHOOK_SECRET_FILE}).
 *
 * <p>Without a URL, or with a URL but no secret, the listener is off: it never posts unsigned.
 * {@link #toString()} never shows the secret.
 */
public final class WebhookConfig {

    /** Environment variable of the webhook URL. */
    public static final String ENV_URL = "SELLER_CONNECTOR_WEBHOOK_URL";
    /** Environment variable of the shared secret. */
    public static final String ENV_SECRET = "SELLER_CONNECTOR_WEBHOOK_SECRET";

    private final URI url;
    private final byte[] secret;
    private final String problem;
    private final int queueSize;
    private final Duration connectTimeout;
    private final Duration requestTimeout;
    private final int attempts;
    private final Set<String> ignoredClients;
    private final SellerNames names;

    private WebhookConfig(URI url, byte[] secret, String problem, int queueSize,
                          Duration connectTimeout, Duration requestTimeout, int attempts,
                          Set<String> ignoredClients, SellerNames names) {
        this.url = url;
        this.secret = secret;
        this.problem = problem;
        this.queueSize = queueSize;
        this.connectTimeout = connectTimeout;
        this.requestTimeout = requestTimeout;
        this.attempts = attempts;
        this.ignoredClients = ignoredClients;
        this.names = names;
    }

    /**
     * Read the configuration.
     *
     * @param spi the provider's SPI configuration lookup (returns null when unset)
     * @param env the process environment
     * @return the configuration; {@link #enabled()} says whether posting is on
     */
    public static WebhookConfig from(Function<String, String> spi, Map<String, String> env) {
        String url = first(spi.apply("url"), env.get(ENV_URL));
        String problem = null;
        URI uri = null;
        if (url == null) {
            problem = "no webhook URL (" + ENV_URL + ")";
        } else {
            try {
                uri = URI.create(url);
                if (!"http".equals(uri.getScheme()) && !"https".equals(uri.getScheme())) {
                    problem = "the webhook URL is not http(s)";
                    uri = null;
                }
            } catch (IllegalArgumentException e) {
                problem = "the webhook URL is not a URL";
            }
        }
        byte[] secret = null;
        String secretValue = first(spi.apply("secret"), env.get(ENV_SECRET));
        String secretFile = first(spi.apply("secret-file"), env.get(ENV_SECRET + "_FILE"));
        if (secretValue == null && secretFile != null) {
            try {
                secretValue = Files.readString(Path.of(secretFile), StandardCharsets.UTF_8).strip();
            } catch (IOException e) {
                problem = "cannot read the webhook secret file " + secretFile;
            }
        }
        if (secretValue == null || secretValue.isEmpty()) {
            problem = problem == null ? "no webhook secret (" + ENV_SECRET + ")" : problem;
        } else {
            secret = secretValue.getBytes(StandardCharsets.UTF_8);
        }
        String ignored = first(spi.apply("ignore-clients"), null);
        Set<String> ignoredClients = new LinkedHashSet<>();
        for (String client : (ignored == null ? "seller-connector" : ignored).split(",")) {
            if (!client.isBlank()) {
                ignoredClients.add(client.trim());
            }
        }
        return new WebhookConfig(problem == null ? uri : null, problem == null ? secret : null,
                problem,
                intValue(spi.apply("queue-size"), 1000),
                Duration.ofMillis(intValue(spi.apply("connect-timeout-ms"), 2000)),
                Duration.ofMillis(intValue(spi.apply("request-timeout-ms"), 5000)),
                Math.max(1, intValue(spi.apply("attempts"), 2)),
                Collections.unmodifiableSet(ignoredClients),
                SellerNames.from(spi));
    }

    private static String first(String a, String b) {
        if (a != null && !a.isBlank()) {
            return a.trim();
        }
        return b != null && !b.isBlank() ? b.trim() : null;
    }

    private static int intValue(String value, int fallback) {
        if (value == null || value.isBlank()) {
            return fallback;
        }
        try {
            return Integer.parseInt(value.trim());
        } catch (NumberFormatException e) {
            return fallback;
        }
    }

    /** @return whether a URL and a secret are configured */
    public boolean enabled() {
        return url != null && secret != null;
    }

    /** @return why posting is off (null when it is on) */
    public String problem() {
        return problem;
    }

    /** @return the webhook URL (null when disabled) */
    public URI url() {
        return url;
    }

    /** @return a copy of the secret's bytes (null when disabled) */
    public byte[] secret() {
        return secret == null ? null : Arrays.copyOf(secret, secret.length);
    }

    /** @return how many posts may wait; more are dropped (the polled feed catches up) */
    public int queueSize() {
        return queueSize;
    }

    /** @return the TCP connect timeout */
    public Duration connectTimeout() {
        return connectTimeout;
    }

    /** @return the whole request's timeout */
    public Duration requestTimeout() {
        return requestTimeout;
    }

    /** @return how many times one post is tried (connection errors and 5xx only) */
    public int attempts() {
        return attempts;
    }

    /** @return client ids whose admin calls are not reported (the connector's own) */
    public Set<String> ignoredClients() {
        return ignoredClients;
    }

    /** @return the seller names */
    public SellerNames names() {
        return names;
    }

    @Override
    public String toString() {
        return enabled()
                ? "WebhookConfig[url=" + url.getScheme() + "://" + url.getHost() + ":" + url.getPort()
                        + url.getRawPath() + ", secret=***, queue=" + queueSize + "]"
                : "WebhookConfig[off: " + problem + "]";
    }
}
