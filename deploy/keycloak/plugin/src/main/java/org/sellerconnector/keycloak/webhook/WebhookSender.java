package org.sellerconnector.keycloak.webhook;

import java.io.IOException;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import org.jboss.logging.Logger;

/**
 * Posts payloads to the webhook from one background thread, in order, so that Keycloak's
 * request threads never wait: {@link #submit} only queues. The queue is bounded; when it is
 * full a payload is dropped and counted (the connector's polling of stored events is the
 * fallback). Each post has a connect and a request timeout and is retried (connection errors
 * and 5xx only) up to the configured number of attempts. Nothing secret is logged.
 */
public final class WebhookSender implements AutoCloseable {

    private static final Logger LOG = Logger.getLogger(WebhookSender.class);
    private static final long WARN_EVERY_MS = 60_000;

    private final WebhookConfig config;
    private final HttpClient http;
    private final ThreadPoolExecutor executor;
    private final AtomicLong dropped = new AtomicLong();
    private final AtomicLong failed = new AtomicLong();
    private final AtomicLong delivered = new AtomicLong();
    private volatile long lastWarning;

    /**
     * @param config an enabled configuration
     */
    public WebhookSender(WebhookConfig config) {
        if (!config.enabled()) {
            throw new IllegalArgumentException("webhook is off: " + config.problem());
        }
        this.config = config;
        this.http = HttpClient.newBuilder()
                .connectTimeout(config.connectTimeout())
                .followRedirects(HttpClient.Redirect.NEVER)
                .version(HttpClient.Version.HTTP_1_1)
                .build();
        this.executor = new ThreadPoolExecutor(1, 1, 0, TimeUnit.MILLISECONDS,
                new ArrayBlockingQueue<>(Math.max(1, config.queueSize())), runnable -> {
                    Thread thread = new Thread(runnable, "seller-connector-webhook");
                    thread.setDaemon(true);
                    return thread;
                }, new ThreadPoolExecutor.AbortPolicy());
    }

    /**
     * Queue a payload for posting; never blocks.
     *
     * @param payload the payload
     * @return false when the queue was full (or the sender closed) and the payload was dropped
     */
    public boolean submit(WebhookPayload payload) {
        String body = payload.toJson();
        try {
            executor.execute(() -> deliver(payload.id(), body));
            return true;
        } catch (RejectedExecutionException e) {
            dropped.incrementAndGet();
            warn("webhook queue full or closed: dropped event %s (%d dropped so far)",
                    payload.id(), dropped.get());
            return false;
        }
    }

    private void deliver(String eventId, String body) {
        byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
        for (int attempt = 1; attempt <= config.attempts(); attempt++) {
            long timestamp = System.currentTimeMillis() / 1000;
            HttpRequest request = HttpRequest.newBuilder(config.url())
                    .timeout(config.requestTimeout())
                    .header("Content-Type", "application/json")
                    .header(WebhookSignature.TIMESTAMP_HEADER, Long.toString(timestamp))
                    .header(WebhookSignature.SIGNATURE_HEADER,
                            WebhookSignature.sign(config.secret(), timestamp, bytes))
                    .header(WebhookSignature.EVENT_ID_HEADER, eventId)
                    .POST(HttpRequest.BodyPublishers.ofByteArray(bytes))
                    .build();
            String outcome;
            try {
                HttpResponse<Void> response =
                        http.send(request, HttpResponse.BodyHandlers.discarding());
                int status = response.statusCode();
                if (status < 300) {
                    delivered.incrementAndGet();
                    LOG.debugf("webhook event %s delivered (%d)", eventId, status);
                    return;
                }
                outcome = "status " + status;
                if (status < 500 && status != 429) {
                    break; // refused for good (bad signature, stale timestamp): do not retry
                }
            } catch (IOException e) {
                outcome = e.getClass().getSimpleName();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
            if (attempt < config.attempts()) {
                try {
                    Thread.sleep(250L * attempt);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                }
            } else {
                failed.incrementAndGet();
                warn("webhook event %s not delivered (%s); %d failed so far", eventId, outcome,
                        failed.get());
                return;
            }
        }
        failed.incrementAndGet();
        warn("webhook event %s refused by the receiver; %d failed so far", eventId, failed.get());
    }

    private void warn(String format, Object... args) {
        long now = System.currentTimeMillis();
        if (now - lastWarning >= WARN_EVERY_MS) {
            lastWarning = now;
            LOG.warnf(format, args);
        } else {
            LOG.debugf(format, args);
        }
    }

    /** @return how many payloads were dropped because the queue was full */
    public long dropped() {
        return dropped.get();
    }

    /** @return how many payloads were delivered (2xx) */
    public long delivered() {
        return delivered.get();
    }

    /** @return how many payloads could not be delivered */
    public long failed() {
        return failed.get();
    }

    /** Stop taking payloads; give queued ones a moment to go out. */
    @Override
    public void close() {
        executor.shutdown();
        try {
            executor.awaitTermination(2, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        executor.shutdownNow();
    }
}
