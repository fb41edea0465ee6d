package dev.nanofaas.runtime;

import java.io.IOException;
import java.net.URI;
import java.net.URISyntaxException;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.Objects;

/**
 * Posts an invocation's outcome to {@code {callbackUrl}/{executionId}:complete}.
 *
 * <p>Best effort by contract: a bounded number of attempts, each with a short timeout and a short
 * backoff between them; a callback that cannot be delivered is logged (rate-limited) and reported
 * as {@code false}, never thrown. Retried: I/O errors, timeouts, 5xx and 429. Not retried: other
 * statuses, which the receiver will answer the same way again.
 *
 * <p>The HTTP client (keep-alive, HTTP/1.1) is created on the first callback, so a runtime that
 * never calls back never pays for it.
 */
public class CallbackClient {

    /** Where callbacks go: a base URL and the optional {@code X-Callback-Token}. */
    public record Target(String url, String token) {
        public Target {
            Objects.requireNonNull(url, "url");
        }
    }

    static final String TRACE_ID_HEADER = "X-Trace-Id";
    static final String TOKEN_HEADER = "X-Callback-Token";
    static final String TRACEPARENT_HEADER = "traceparent";

    private final Target defaultTarget;
    private final int attempts;
    private final Duration timeout;
    private final Duration firstBackoff;
    private final Log.Limiter failureLog = new Log.Limiter(10, 60_000);
    private volatile HttpClient client;

    /**
     * @param defaultTarget where {@link #sendResult(String, InvocationResult, String)} posts, or
     *     {@code null} when no callback URL is configured
     * @param attempts how many times to try, at least 1
     * @param timeout connect timeout and per-attempt response timeout
     */
    public CallbackClient(Target defaultTarget, int attempts, Duration timeout) {
        this(defaultTarget, attempts, timeout, Duration.ofMillis(50));
    }

    CallbackClient(Target defaultTarget, int attempts, Duration timeout, Duration firstBackoff) {
        if (attempts < 1) {
            throw new IllegalArgumentException("attempts must be at least 1, got " + attempts);
        }
        this.defaultTarget = defaultTarget;
        this.attempts = attempts;
        this.timeout = Objects.requireNonNull(timeout, "timeout");
        this.firstBackoff = Objects.requireNonNull(firstBackoff, "firstBackoff");
    }

    /** The target from {@code CALLBACK_URL} and {@code CALLBACK_TOKEN}, or null. */
    public Target defaultTarget() {
        return defaultTarget;
    }

    /**
     * Sends {@code result} for {@code executionId} to the default target.
     *
     * @param traceId sent as {@code X-Trace-Id} when not null
     * @return whether a 2xx answer came back; {@code false} at once when no target is configured
     */
    public boolean sendResult(String executionId, InvocationResult result, String traceId) {
        return defaultTarget != null && sendResult(defaultTarget, executionId, result, traceId);
    }

    /** Like {@link #sendResult(String, InvocationResult, String)} with an explicit target. */
    public boolean sendResult(
            Target target, String executionId, InvocationResult result, String traceId) {
        return sendResult(target, executionId, result, traceId, null);
    }

    /**
     * Like {@link #sendResult(Target, String, InvocationResult, String)}, with the invocation's
     * W3C {@code traceparent} (sent as is when not null; it was checked on the way in).
     */
    public boolean sendResult(
            Target target,
            String executionId,
            InvocationResult result,
            String traceId,
            String traceparent) {
        URI uri;
        byte[] body;
        try {
            uri = completionUri(target.url(), executionId);
            body = result.toJson();
        } catch (URISyntaxException | IOException | RuntimeException e) {
            logFailure(executionId, "cannot build the callback: " + e.getMessage());
            return false;
        }
        HttpRequest.Builder request =
                HttpRequest.newBuilder(uri)
                        .timeout(timeout)
                        .header("Content-Type", "application/json")
                        .POST(HttpRequest.BodyPublishers.ofByteArray(body));
        if (traceId != null) {
            request.header(TRACE_ID_HEADER, traceId);
        }
        if (traceparent != null) {
            request.header(TRACEPARENT_HEADER, traceparent);
        }
        if (target.token() != null) {
            request.header(TOKEN_HEADER, target.token());
        }
        HttpRequest built = request.build();
        String last = "";
        Duration backoff = firstBackoff;
        for (int attempt = 1; attempt <= attempts; attempt++) {
            try {
                HttpResponse<Void> response =
                        client().send(built, HttpResponse.BodyHandlers.discarding());
                int status = response.statusCode();
                if (status >= 200 && status < 300) {
                    return true;
                }
                last = "HTTP " + status;
                if (status != 429 && status < 500) {
                    break;
                }
            } catch (IOException e) {
                last = e.getClass().getSimpleName() + ": " + e.getMessage();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                last = "interrupted";
                break;
            }
            if (attempt < attempts) {
                try {
                    Thread.sleep(backoff.toMillis());
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    last = "interrupted";
                    break;
                }
                backoff = backoff.multipliedBy(4);
            }
        }
        logFailure(executionId, "POST " + uri + " failed: " + last);
        return false;
    }

    /** {@code {base}/{executionId}:complete}, with one slash between base and id. */
    static URI completionUri(String base, String executionId) throws URISyntaxException {
        String trimmed = base;
        while (trimmed.endsWith("/")) {
            trimmed = trimmed.substring(0, trimmed.length() - 1);
        }
        return new URI(trimmed + "/" + executionId + ":complete");
    }

    /**
     * Checks that {@code url} can serve as a callback base: an absolute http(s) URL with a host.
     *
     * @return null when valid, else why not
     */
    static String checkCallbackUrl(String url) {
        URI uri;
        try {
            uri = new URI(url);
        } catch (URISyntaxException e) {
            return "not a valid URL (" + e.getMessage() + ")";
        }
        String scheme = uri.getScheme();
        if (scheme == null
                || !(scheme.equalsIgnoreCase("http") || scheme.equalsIgnoreCase("https"))) {
            return "must be an http:// or https:// URL";
        }
        if (uri.getHost() == null) {
            return "has no host";
        }
        if (uri.getRawQuery() != null || uri.getRawFragment() != null) {
            return "must not have a query or a fragment";
        }
        return null;
    }

    private HttpClient client() {
        HttpClient c = client;
        if (c == null) {
            synchronized (this) {
                c = client;
                if (c == null) {
                    c =
                            HttpClient.newBuilder()
                                    .version(HttpClient.Version.HTTP_1_1)
                                    .connectTimeout(timeout)
                                    .followRedirects(HttpClient.Redirect.NEVER)
                                    .build();
                    client = c;
                }
            }
        }
        return c;
    }

    private void logFailure(String executionId, String why) {
        failureLog.warn(
                () ->
                        "callback for execution "
                                + executionId
                                + " not delivered after "
                                + attempts
                                + " attempt(s): "
                                + why);
    }
}
