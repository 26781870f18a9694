package org.sellerconnector.keycloak.webhook;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** The sender against a real HTTP server on loopback. */
class WebhookSenderTest {

    private HttpServer server;

    @AfterEach
    void stop() {
        if (server != null) {
            server.stop(0);
        }
    }

    private WebhookConfig config(int queueSize) {
        return WebhookConfig.from(Map.of("queue-size", Integer.toString(queueSize),
                        "request-timeout-ms", "3000")::get,
                Map.of("SELLER_CONNECTOR_WEBHOOK_URL",
                        "http://127.0.0.1:" + server.getAddress().getPort() + "/keycloak/events",
                        "SELLER_CONNECTOR_WEBHOOK_SECRET", "s3cret"));
    }

    private void start(com.sun.net.httpserver.HttpHandler handler) throws IOException {
        server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
        server.createContext("/keycloak/events", handler);
        server.start();
    }

    private static void answer(HttpExchange exchange, int status) throws IOException {
        exchange.sendResponseHeaders(status, -1);
        exchange.close();
    }

    @Test
    void postsSignedJson() throws Exception {
        BlockingQueue<String[]> received = new LinkedBlockingQueue<>();
        start(exchange -> {
            byte[] body = exchange.getRequestBody().readAllBytes();
            received.add(new String[] {
                exchange.getRequestHeaders().getFirst(WebhookSignature.TIMESTAMP_HEADER),
                exchange.getRequestHeaders().getFirst(WebhookSignature.SIGNATURE_HEADER),
                exchange.getRequestHeaders().getFirst(WebhookSignature.EVENT_ID_HEADER),
                exchange.getRequestHeaders().getFirst("Content-Type"),
                new String(body, StandardCharsets.UTF_8)});
            answer(exchange, 202);
        });
        try (WebhookSender sender = new WebhookSender(config(10))) {
            assertTrue(sender.submit(new WebhookPayload("ev-1", "user-event", "LOGIN", "login",
                    1L, "sellers")));
            String[] got = received.poll(5, TimeUnit.SECONDS);
            assertEquals("ev-1", got[2]);
            assertEquals("application/json", got[3]);
            assertTrue(got[4].contains("\"id\":\"ev-1\""));
            assertTrue(WebhookSignature.verify("s3cret".getBytes(StandardCharsets.UTF_8),
                    Long.parseLong(got[0]), got[4].getBytes(StandardCharsets.UTF_8), got[1]));
            long now = System.currentTimeMillis() / 1000;
            assertTrue(Math.abs(now - Long.parseLong(got[0])) < 60);
        }
    }

    @Test
    void retriesServerErrorsButNotRefusals() throws Exception {
        BlockingQueue<String> calls = new LinkedBlockingQueue<>();
        start(exchange -> {
            String id = exchange.getRequestHeaders().getFirst(WebhookSignature.EVENT_ID_HEADER);
            calls.add(id);
            answer(exchange, "ev-5xx".equals(id) ? 503 : 401);
        });
        try (WebhookSender sender = new WebhookSender(config(10))) {
            sender.submit(new WebhookPayload("ev-5xx", "user-event", "LOGIN", "login", 1L, "r"));
            sender.submit(new WebhookPayload("ev-401", "user-event", "LOGIN", "login", 1L, "r"));
            long deadline = System.currentTimeMillis() + 5000;
            while (sender.failed() < 2 && System.currentTimeMillis() < deadline) {
                Thread.sleep(20);
            }
            assertEquals(2, sender.failed());
            assertEquals(3, calls.size()); // two tries of the 503, one of the 401
        }
    }

    @Test
    void neverBlocksTheCallerWhenTheReceiverHangs() throws Exception {
        CountDownLatch release = new CountDownLatch(1);
        start(exchange -> {
            try {
                release.await(10, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            answer(exchange, 202);
        });
        try (WebhookSender sender = new WebhookSender(config(2))) {
            long started = System.nanoTime();
            int accepted = 0;
            for (int i = 0; i < 20; i++) {
                if (sender.submit(new WebhookPayload("ev-" + i, "user-event", "LOGIN", "login",
                        1L, "r"))) {
                    accepted++;
                }
            }
            long millis = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - started);
            assertTrue(millis < 1000, "submit blocked for " + millis + " ms");
            assertTrue(accepted <= 3, "accepted " + accepted); // one in flight, two queued
            assertEquals(20 - accepted, sender.dropped());
            assertFalse(sender.submit(new WebhookPayload("late", "user-event", "LOGIN", "login",
                    1L, "r")));
            release.countDown();
        }
    }
}
