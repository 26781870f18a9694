package org.sellerconnector.keycloak.webhook;

import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;

import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/**
 * The webhook's signature: HMAC-SHA256 with the shared secret over
 * {@code "<timestamp>.<body>"}, sent as {@code X-Seller-Connector-Signature: v1=<hex>} beside
 * {@code X-Seller-Connector-Timestamp: <unix seconds>}.
 *
 * <p>The receiver recomputes it over the raw body, compares in constant time, and refuses
 * timestamps outside its window; the event id inside the body defeats replays within it.
 */
public final class WebhookSignature {

    /** Header carrying the unix time (seconds) at which the request was signed. */
    public static final String TIMESTAMP_HEADER = "X-Seller-Connector-Timestamp";
    /** Header carrying {@code v1=<hex HMAC-SHA256>}. */
    public static final String SIGNATURE_HEADER = "X-Seller-Connector-Signature";
    /** Header repeating the body's event id (for logs; the signed body is what counts). */
    public static final String EVENT_ID_HEADER = "X-Seller-Connector-Event-Id";
    /** The scheme prefix of the signature value. */
    public static final String VERSION = "v1";

    private static final char[] HEX = "0123456789abcdef".toCharArray();

    private WebhookSignature() {
    }

    /**
     * Sign a request.
     *
     * @param secret the shared secret (its UTF-8 bytes)
     * @param timestamp unix seconds
     * @param body the exact bytes that are sent
     * @return {@code v1=} followed by the lower-case hex HMAC
     */
    public static String sign(byte[] secret, long timestamp, byte[] body) {
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(secret, "HmacSHA256"));
            mac.update((timestamp + ".").getBytes(StandardCharsets.US_ASCII));
            mac.update(body);
            return VERSION + "=" + hex(mac.doFinal());
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("HmacSHA256 is not available", e);
        }
    }

    /**
     * Check a signature in constant time (what the receiver does; used by the tests).
     *
     * @param secret the shared secret
     * @param timestamp the timestamp header's value
     * @param body the raw body
     * @param signature the signature header's value
     * @return whether the signature matches
     */
    public static boolean verify(byte[] secret, long timestamp, byte[] body, String signature) {
        if (signature == null) {
            return false;
        }
        byte[] expected = sign(secret, timestamp, body).getBytes(StandardCharsets.US_ASCII);
        return MessageDigest.isEqual(expected, signature.getBytes(StandardCharsets.US_ASCII));
    }

    private static String hex(byte[] bytes) {
        char[] out = new char[bytes.length * 2];
        for (int i = 0; i < bytes.length; i++) {
            out[2 * i] = HEX[(bytes[i] >> 4) & 0xf];
            out[2 * i + 1] = HEX[bytes[i] & 0xf];
        }
        return new String(out);
    }
}
