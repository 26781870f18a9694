package org.sellerconnector.keycloak.webhook;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;

import org.junit.jupiter.api.Test;

class WebhookSignatureTest {

    private static final byte[] SECRET = "s3cret".getBytes(StandardCharsets.UTF_8);
    private static final byte[] BODY = "{\"id\":\"e1\"}".getBytes(StandardCharsets.UTF_8);

    @Test
    void signsTimestampDotBodyWithHmacSha256() {
        // The same vector as the connector's Python test (hmac.new(secret, b"ts." + body)).
        assertEquals("v1=e584ea1bae10bbbc105c193bee45ee128f39b60803189b2673b3e878b94997c8",
                WebhookSignature.sign(SECRET, 1_700_000_000L, BODY));
    }

    @Test
    void verifiesOnlyTheExactTimestampBodyAndSecret() {
        String signature = WebhookSignature.sign(SECRET, 1_700_000_000L, BODY);
        assertTrue(WebhookSignature.verify(SECRET, 1_700_000_000L, BODY, signature));
        assertFalse(WebhookSignature.verify(SECRET, 1_700_000_001L, BODY, signature));
        assertFalse(WebhookSignature.verify("other".getBytes(StandardCharsets.UTF_8),
                1_700_000_000L, BODY, signature));
        assertFalse(WebhookSignature.verify(SECRET, 1_700_000_000L,
                "{\"id\":\"e2\"}".getBytes(StandardCharsets.UTF_8), signature));
        assertFalse(WebhookSignature.verify(SECRET, 1_700_000_000L, BODY, null));
    }
}
