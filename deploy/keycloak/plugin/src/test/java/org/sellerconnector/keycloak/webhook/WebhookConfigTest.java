package org.sellerconnector.keycloak.webhook;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Set;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class WebhookConfigTest {

    @Test
    void fromTheEnvironment() {
        WebhookConfig config = WebhookConfig.from(key -> null, Map.of(
                "SELLER_CONNECTOR_WEBHOOK_URL", "http://127.0.0.1:9/keycloak/events",
                "SELLER_CONNECTOR_WEBHOOK_SECRET", "top-secret"));
        assertTrue(config.enabled());
        assertEquals("http://127.0.0.1:9/keycloak/events", config.url().toString());
        assertArrayEquals("top-secret".getBytes(StandardCharsets.UTF_8), config.secret());
        assertEquals(Set.of("seller-connector"), config.ignoredClients());
        assertEquals(1000, config.queueSize());
        assertFalse(config.toString().contains("top-secret"));
    }

    @Test
    void spiConfigWinsAndSecretFileIsRead(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("secret");
        Files.writeString(file, "from-file\n");
        Map<String, String> spi = Map.of("url", "https://connector.example/keycloak/events",
                "secret-file", file.toString(), "queue-size", "5", "ignore-clients", "a, b");
        WebhookConfig config = WebhookConfig.from(spi::get,
                Map.of("SELLER_CONNECTOR_WEBHOOK_URL", "http://ignored"));
        assertEquals("https://connector.example/keycloak/events", config.url().toString());
        assertArrayEquals("from-file".getBytes(StandardCharsets.UTF_8), config.secret());
        assertEquals(5, config.queueSize());
        assertEquals(Set.of("a", "b"), config.ignoredClients());
    }

    @Test
    void neverPostsUnsigned() {
        WebhookConfig config = WebhookConfig.from(key -> null,
                Map.of("SELLER_CONNECTOR_WEBHOOK_URL", "http://127.0.0.1:9/"));
        assertFalse(config.enabled());
        assertNull(config.url());
        assertTrue(config.problem().contains("secret"));
    }

    @Test
    void refusesOtherSchemes() {
        WebhookConfig config = WebhookConfig.from(key -> null, Map.of(
                "SELLER_CONNECTOR_WEBHOOK_URL", "file:///etc/passwd",
                "SELLER_CONNECTOR_WEBHOOK_SECRET", "s"));
        assertFalse(config.enabled());
    }
}
