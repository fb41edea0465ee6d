package dev.nanofaas.runtime;

import static org.junit.jupiter.api.Assertions.fail;

import com.fasterxml.jackson.databind.JsonNode;
import com.sun.net.httpserver.Headers;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

/**
 * A real HTTP server on 127.0.0.1, port 0, that records every callback it receives. It answers
 * {@code failStatus} to the first {@code failFirst} requests and 204 afterwards.
 */
final class CallbackSink implements AutoCloseable {

    /** One recorded request. */
    record Received(String method, String path, Headers headers, JsonNode body) {
        String header(String name) {
            return headers.getFirst(name);
        }
    }

    private final HttpServer server;
    private final List<Received> received = new ArrayList<>();
    private int failuresLeft;

    CallbackSink() throws IOException {
        this(0, 204);
    }

    CallbackSink(int failFirst, int failStatus) throws IOException {
        RuntimeServer.configureJdkHttpServer();
        this.failuresLeft = failFirst;
        server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 16);
        server.createContext(
                "/",
                exchange -> {
                    try (exchange) {
                        byte[] bytes = exchange.getRequestBody().readAllBytes();
                        JsonNode body = bytes.length == 0 ? null : Json.MAPPER.readTree(bytes);
                        Headers headers = new Headers();
                        headers.putAll(exchange.getRequestHeaders());
                        int status;
                        synchronized (this) {
                            received.add(
                                    new Received(
                                            exchange.getRequestMethod(),
                                            exchange.getRequestURI().getRawPath(),
                                            headers,
                                            body));
                            status = failuresLeft > 0 ? failStatus : 204;
                            if (failuresLeft > 0) {
                                failuresLeft--;
                            }
                            notifyAll();
                        }
                        exchange.sendResponseHeaders(status, -1);
                    }
                });
        server.start();
    }

    /** The base URL to configure as callback URL. */
    String url() {
        return "http://127.0.0.1:" + server.getAddress().getPort() + "/v1/internal/executions";
    }

    /** What arrived so far. */
    synchronized List<Received> received() {
        return List.copyOf(received);
    }

    /** Waits until at least {@code n} requests arrived; fails the test after {@code timeout}. */
    synchronized List<Received> awaitRequests(int n, Duration timeout) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (received.size() < n) {
            long left = (deadline - System.nanoTime()) / 1_000_000L;
            if (left <= 0) {
                fail("expected " + n + " callback(s) within " + timeout + ", got " + received);
            }
            wait(left);
        }
        return List.copyOf(received);
    }

    @Override
    public void close() {
        server.stop(0);
    }
}
