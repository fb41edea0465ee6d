package dev.nanofaas.runtime;

import com.sun.net.httpserver.HttpHandler;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executor;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The HTTP server of the runtime: the JDK's {@code com.sun.net.httpserver}, plus one callback
 * thread so that callbacks never delay a response.
 *
 * <p>Threads: with {@code THREADS=1} (the default) requests are served on the server's own
 * dispatcher thread, which saves a thread hand-off per request (~40 µs, a quarter of the warm
 * latency, measured); the price is that a request arriving during an invocation (even
 * {@code /health}) waits for it to end. With {@code THREADS=N>1} a pool of N threads serves them.
 *
 * <p>{@link #shutdown()} (run by the SIGTERM hook) refuses new invocations, waits up to
 * {@code SHUTDOWN_GRACE_MS} for running ones, lets requests already queued be refused with 503,
 * closes the listener and connections, then gives queued callbacks the rest of the grace (at
 * least a second) to go out.
 */
final class RuntimeServer {

    /** Callbacks waiting to be sent beyond this many are dropped (and logged). */
    static final int CALLBACK_QUEUE = 1024;

    /** On the dispatcher thread, shutdown waits for this long without a request before closing. */
    static final int QUIET_MILLIS = 20;

    static {
        configureJdkHttpServer();
    }

    /**
     * Tunes the JDK server; it reads these properties once per JVM, when the first HttpServer is
     * created, so call this before creating any. A property given on the command line wins.
     *
     * <ul>
     *   <li>TCP_NODELAY: the server writes a response's headers and body separately, so without
     *       it each kept-alive response waits ~40 ms (Nagle's algorithm + delayed ACK).
     *   <li>Idle keep-alive connections are closed after 600 s instead of 30 s: the watchdog keeps
     *       one pooled connection, and every server-side close of an idle connection is a chance
     *       for a request to race it.
     * </ul>
     */
    static void configureJdkHttpServer() {
        setIfAbsent("sun.net.httpserver.nodelay", "true");
        setIfAbsent("sun.net.httpserver.idleInterval", "600");
    }

    private static void setIfAbsent(String property, String value) {
        if (System.getProperty(property) == null) {
            System.setProperty(property, value);
        }
    }

    /** The request handler of a runtime server: its routes, and how many requests it has seen. */
    interface Routes extends HttpHandler {
        /** Requests that reached the routes so far; shutdown watches it to see when all is quiet. */
        long requestsSeen();
    }

    /**
     * The request handler of a prewarmed runtime: made once the server's callback thread and
     * in-flight counter exist, told about the server before it starts serving.
     */
    interface PrewarmRoutes extends Routes {
        void attach(RuntimeServer server, Executor callbackExecutor, InFlight inFlight);
    }

    /**
     * A prewarmed runtime's executor: the dispatcher thread (inline, as the JDK's default
     * executor does) or a pool, switched when specialization changes {@code THREADS}.
     */
    private static final class SwitchableExecutor implements Executor {
        volatile ThreadPoolExecutor pool;

        @Override
        public void execute(Runnable task) {
            ThreadPoolExecutor p = pool;
            if (p == null) {
                task.run();
            } else {
                p.execute(task);
            }
        }
    }

    /** Volatile: a prewarmed runtime's specialization replaces it (see {@link #specialized}). */
    private volatile RuntimeConfig config;
    private final HttpServer server;
    /** The invocation pool, or null when the dispatcher thread serves (THREADS=1). */
    private volatile ThreadPoolExecutor invokers;
    /** Prewarmed runtimes only: the server's executor; null otherwise. */
    private final SwitchableExecutor switchable;
    private final Routes endpoints;
    private final ThreadPoolExecutor callbackExecutor;
    private final InFlight inFlight;
    private final Object stopLock = new Object();
    private boolean stopped;

    private RuntimeServer(
            RuntimeConfig config,
            HttpServer server,
            InFlight inFlight,
            ThreadPoolExecutor invokers,
            ThreadPoolExecutor callbackExecutor,
            Routes endpoints,
            SwitchableExecutor switchable) {
        this.config = config;
        this.server = server;
        this.inFlight = inFlight;
        this.invokers = invokers;
        this.endpoints = endpoints;
        this.callbackExecutor = callbackExecutor;
        this.switchable = switchable;
    }

    /**
     * Binds HOST:PORT and starts serving.
     *
     * @throws StartupException with {@link StartupException#EXIT_LISTEN} when it cannot listen
     */
    static RuntimeServer start(
            RuntimeConfig config, FunctionHandler handler, CallbackClient callbacks)
            throws StartupException {
        HttpServer server = bind(config);
        ThreadPoolExecutor invokers = invokerPool(config.threads());
        ThreadPoolExecutor callbackExecutor = callbackThread();
        InFlight inFlight = new InFlight();
        Endpoints endpoints = new Endpoints(config, handler, callbacks, callbackExecutor, inFlight);
        RuntimeServer runtime =
                new RuntimeServer(
                        config, server, inFlight, invokers, callbackExecutor, endpoints, null);
        server.createContext("/", endpoints);
        // null: the JDK's default, which runs each exchange on the dispatcher thread.
        server.setExecutor(invokers);
        server.start();
        return runtime;
    }

    /**
     * Binds HOST:PORT and serves {@code routes}, a prewarmed runtime's (see {@link Specializer}),
     * whose specialization may later change the configuration and {@code THREADS}.
     *
     * @throws StartupException with {@link StartupException#EXIT_LISTEN} when it cannot listen
     */
    static RuntimeServer startPrewarmed(RuntimeConfig config, PrewarmRoutes routes)
            throws StartupException {
        HttpServer server = bind(config);
        ThreadPoolExecutor invokers = invokerPool(config.threads());
        ThreadPoolExecutor callbackExecutor = callbackThread();
        InFlight inFlight = new InFlight();
        SwitchableExecutor switchable = new SwitchableExecutor();
        switchable.pool = invokers;
        RuntimeServer runtime =
                new RuntimeServer(
                        config, server, inFlight, invokers, callbackExecutor, routes, switchable);
        routes.attach(runtime, callbackExecutor, inFlight);
        server.createContext("/", routes);
        server.setExecutor(switchable);
        server.start();
        return runtime;
    }

    /**
     * A prewarmed runtime was specialized: from now on {@code specialized} is its configuration
     * (shutdown grace) and its {@code THREADS} serve requests. HOST and PORT stay those bound.
     */
    void specialized(RuntimeConfig specialized) {
        if (switchable == null) {
            throw new IllegalStateException("not a prewarmed runtime");
        }
        RuntimeConfig before = config;
        config = specialized;
        if (specialized.threads() != before.threads()) {
            ThreadPoolExecutor old = invokers;
            ThreadPoolExecutor pool = invokerPool(specialized.threads());
            invokers = pool;
            switchable.pool = pool;
            if (old != null) {
                // The specialization request itself may be running on it: let it finish.
                old.shutdown();
            }
        }
    }

    private static HttpServer bind(RuntimeConfig config) throws StartupException {
        InetSocketAddress address = new InetSocketAddress(config.host(), config.port());
        if (address.isUnresolved()) {
            throw new StartupException(
                    StartupException.EXIT_LISTEN,
                    "HOST=" + config.host() + ": cannot resolve this host name");
        }
        HttpServer server;
        try {
            server = HttpServer.create(address, 128);
        } catch (IOException | RuntimeException e) {
            throw new StartupException(
                    StartupException.EXIT_LISTEN,
                    "cannot listen on "
                            + config.host()
                            + ":"
                            + config.port()
                            + ": "
                            + HandlerLoader.describe(e));
        }
        return server;
    }

    /** The invocation pool of {@code threads}, or null for 1 (the dispatcher thread serves). */
    private static ThreadPoolExecutor invokerPool(int threads) {
        return threads == 1
                ? null
                : new ThreadPoolExecutor(
                        threads,
                        threads,
                        0,
                        TimeUnit.MILLISECONDS,
                        new LinkedBlockingQueue<>(),
                        daemonThreads("nanofaas-invoke-"));
    }

    private static ThreadPoolExecutor callbackThread() {
        return new ThreadPoolExecutor(
                1,
                1,
                0,
                TimeUnit.MILLISECONDS,
                new ArrayBlockingQueue<>(CALLBACK_QUEUE),
                daemonThreads("nanofaas-callback-"));
    }

    /** The bound port (useful with PORT=0). */
    int port() {
        return server.getAddress().getPort();
    }

    /** Number of invocations currently running. */
    int inFlight() {
        return inFlight.running();
    }

    /**
     * Waits until every callback queued so far has been attempted (tests; shutdown).
     *
     * @return false when that did not happen within {@code timeoutMillis}
     */
    boolean awaitCallbacks(long timeoutMillis) {
        try {
            callbackExecutor.submit(() -> {}).get(timeoutMillis, TimeUnit.MILLISECONDS);
            return true;
        } catch (TimeoutException | ExecutionException | RejectedExecutionException e) {
            return false;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        }
    }

    /** Stops serving; idempotent. See the class comment for the order of things. */
    void shutdown() {
        synchronized (stopLock) {
            if (stopped) {
                return;
            }
            stopped = true;
        }
        ThreadPoolExecutor invokers = this.invokers;
        long grace = config.shutdownGrace().toMillis();
        long deadline = System.nanoTime() + grace * 1_000_000L;
        boolean drained = inFlight.drain(grace);
        if (!drained) {
            Log.warn(
                    "stopping with "
                            + inFlight.running()
                            + " invocation(s) still running after SHUTDOWN_GRACE_MS="
                            + grace);
        }
        quiesce(deadline, invokers);
        if (drained || invokers != null) {
            server.stop(0);
        }
        // else the dispatcher thread is stuck in the handler and HttpServer.stop would wait for
        // it forever; the JVM ends it when the shutdown hooks return.
        if (invokers != null) {
            invokers.shutdownNow();
        }
        callbackExecutor.shutdown();
        try {
            long left = Math.max(0, (deadline - System.nanoTime()) / 1_000_000L);
            if (!callbackExecutor.awaitTermination(Math.max(left, 1000), TimeUnit.MILLISECONDS)) {
                int unsent = callbackExecutor.getQueue().size();
                Log.warn("stopping with " + unsent + " callback(s) not sent");
                callbackExecutor.shutdownNow();
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /**
     * Requests that were queued behind the last invocation are refused with 503 now (draining);
     * give them the time to be answered rather than reset: until the pool is idle, or, on the
     * dispatcher thread, until no request has come in for {@value #QUIET_MILLIS} ms. Bounded by
     * {@code deadline}.
     */
    private void quiesce(long deadline, ThreadPoolExecutor invokers) {
        long seen = -1;
        while (System.nanoTime() < deadline) {
            if (invokers != null) {
                if (invokers.getActiveCount() == 0 && invokers.getQueue().isEmpty()) {
                    return;
                }
            } else {
                long now = endpoints.requestsSeen();
                if (now == seen) {
                    return;
                }
                seen = now;
            }
            try {
                Thread.sleep(invokers != null ? 5 : QUIET_MILLIS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
        }
    }

    /** Loads and exercises Jackson, so that the first invocation does not pay for it. */
    static void warmUpJson() {
        try {
            String sample = "{\"input\":{\"a\":[1,\"b\",true,null]},\"metadata\":{\"k\":\"v\"}}";
            Endpoints.parse(sample.getBytes(StandardCharsets.UTF_8), "warm-up", null);
            Json.MAPPER.writeValueAsBytes(Map.of("a", List.of(1, "b", true)));
            InvocationResult.success(Map.of()).toJson();
        } catch (Exception | LinkageError e) {
            // Not fatal here: the same failure will surface, with its cause, on first use.
            Log.warn("JSON warm-up failed: " + HandlerLoader.describe(e));
        }
    }

    private static ThreadFactory daemonThreads(String prefix) {
        AtomicInteger n = new AtomicInteger();
        return r -> {
            Thread t = new Thread(r, prefix + n.incrementAndGet());
            t.setDaemon(true);
            return t;
        };
    }
}
