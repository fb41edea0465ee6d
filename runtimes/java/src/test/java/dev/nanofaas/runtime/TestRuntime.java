package dev.nanofaas.runtime;

import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;

/** An in-process runtime on 127.0.0.1 port 0, with an HTTP client to call it. Close it after use. */
final class TestRuntime implements AutoCloseable {

    /** An HTTP response, its body parsed as JSON when it has one. */
    record Response(int status, HttpResponse<byte[]> raw, JsonNode json) {
        String header(String name) {
            return raw.headers().firstValue(name).orElse(null);
        }
    }

    private static final HttpClient CLIENT =
            HttpClient.newBuilder()
                    .version(HttpClient.Version.HTTP_1_1)
                    .connectTimeout(Duration.ofSeconds(5))
                    .build();

    final RuntimeServer server;

    private TestRuntime(RuntimeServer server) {
        this.server = server;
    }

    /** Starts the runtime with {@code env} (PORT defaults to 0, LOG_LEVEL to error). */
    static TestRuntime start(Map<String, String> env, FunctionHandler handler)
            throws StartupException {
        return start(env, handler, null);
    }

    /** Same, with the callback client given (null: a real one with a 5 ms first backoff). */
    static TestRuntime start(Map<String, String> env, FunctionHandler handler, CallbackClient callbacks)
            throws StartupException {
        Map<String, String> all = new HashMap<>(env);
        all.putIfAbsent("PORT", "0");
        all.putIfAbsent("LOG_LEVEL", "error");
        RuntimeConfig config = RuntimeConfig.fromEnv(all);
        Log.setLevel(config.logLevel());
        if (callbacks == null) {
            callbacks =
                    new CallbackClient(
                            config.defaultCallback(),
                            config.callbackAttempts(),
                            config.callbackTimeout(),
                            Duration.ofMillis(5));
        }
        return new TestRuntime(RuntimeServer.start(config, handler, callbacks));
    }

    /**
     * Starts a prewarmed runtime ({@link Main#startPrewarmed}) with {@code env} (PORT defaults to
     * 0, LOG_LEVEL to error, NANOFAAS_PREWARM to 1, NANOFAAS_PREWARM_WARMUP to 0), writing the
     * specialization's variables to {@code environment} and its exit code to {@code exit}.
     */
    static TestRuntime startPrewarmed(
            Map<String, String> env,
            Specializer.Environment environment,
            java.util.function.IntConsumer exit)
            throws StartupException {
        Map<String, String> all = new HashMap<>(env);
        all.putIfAbsent("PORT", "0");
        all.putIfAbsent("LOG_LEVEL", "error");
        all.putIfAbsent(Specializer.PREWARM_ENV, "1");
        all.putIfAbsent(Specializer.WARMUP_ENV, "0");
        return new TestRuntime(
                Main.startPrewarmed(all, TestRuntime.class.getClassLoader(), environment, exit));
    }

    String url(String path) {
        return "http://127.0.0.1:" + server.port() + path;
    }

    /** POST /invoke with {@code body} and header name/value pairs. */
    Response invoke(String body, String... headers) throws IOException, InterruptedException {
        return send("POST", "/invoke", body, headers);
    }

    Response send(String method, String path, String body, String... headers)
            throws IOException, InterruptedException {
        HttpRequest.Builder request =
                HttpRequest.newBuilder(URI.create(url(path)))
                        .timeout(Duration.ofSeconds(10))
                        .method(
                                method,
                                body == null
                                        ? HttpRequest.BodyPublishers.noBody()
                                        : HttpRequest.BodyPublishers.ofString(body));
        for (int i = 0; i < headers.length; i += 2) {
            request.header(headers[i], headers[i + 1]);
        }
        HttpResponse<byte[]> response =
                CLIENT.send(request.build(), HttpResponse.BodyHandlers.ofByteArray());
        byte[] bytes = response.body();
        JsonNode json = bytes.length == 0 ? null : Json.MAPPER.readTree(bytes);
        return new Response(response.statusCode(), response, json);
    }

    /** Waits until every callback queued so far has been attempted. */
    void awaitCallbacks() {
        assertTrue(server.awaitCallbacks(10_000), "callbacks did not finish within 10 s");
    }

    @Override
    public void close() {
        server.shutdown();
    }
}
