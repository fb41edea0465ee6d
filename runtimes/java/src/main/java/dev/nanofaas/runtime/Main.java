package dev.nanofaas.runtime;

import java.util.Map;
import java.util.function.IntConsumer;

/**
 * Entry point: reads the configuration from the environment, selects and instantiates the handler,
 * listens, and installs the SIGTERM hook. Any startup failure prints one line on stderr and exits
 * with its code before anything listens:
 *
 * <ul>
 *   <li>{@value StartupException#EXIT_CONFIG}: invalid configuration (environment or arguments)
 *   <li>{@value StartupException#EXIT_HANDLER}: no usable handler
 *   <li>{@value StartupException#EXIT_LISTEN}: cannot listen on HOST:PORT
 * </ul>
 *
 * <p>With {@code NANOFAAS_PREWARM=1} it starts a generic, prewarmed instance instead: no handler
 * until {@code POST /_nanofaas/specialize} (see {@link Specializer}).
 */
public final class Main {

    private Main() {}

    public static void main(String[] args) {
        int code = run(args, System.getenv(), Thread.currentThread().getContextClassLoader());
        if (code != 0) {
            System.exit(code);
        }
    }

    /** Starts the runtime; returns 0 once it is serving, else the exit code of the failure. */
    static int run(String[] args, Map<String, String> env, ClassLoader loader) {
        try {
            RuntimeServer server = start(args, env, loader);
            Runtime.getRuntime().addShutdownHook(new Thread(server::shutdown, "nanofaas-shutdown"));
            return 0;
        } catch (StartupException e) {
            System.err.println("nanofaas-java-runtime: " + e.getMessage());
            System.err.flush();
            return e.exitCode();
        }
    }

    static RuntimeServer start(String[] args, Map<String, String> env, ClassLoader loader)
            throws StartupException {
        if (args.length > 0) {
            throw new StartupException(
                    StartupException.EXIT_CONFIG,
                    "unexpected argument '"
                            + args[0]
                            + "': configure the runtime with environment variables (see README)");
        }
        if (Specializer.requested(env)) {
            RuntimeConfig.fromEnv(env); // the instance's own configuration first
            return startPrewarmed(env, loader, ProcessEnv.open(), Main::exitSoon);
        }
        // Jackson takes tens of milliseconds to initialise: do it on the second core while the
        // handler loads and the server binds. A first invocation arriving earlier simply waits
        // for the class initialisation to finish.
        Thread warmUp = new Thread(RuntimeServer::warmUpJson, "nanofaas-json-warm-up");
        warmUp.setDaemon(true);
        warmUp.start();
        RuntimeConfig config = RuntimeConfig.fromEnv(env);
        Log.setLevel(config.logLevel());
        // HANDLER_CLASSPATH: the handler's jars, in a class loader of their own (child-first,
        // seeing the function API and the JDK only). Without it, the handler is looked up in
        // `loader` (a handler put on the JVM's own classpath, as tests do).
        ClassLoader handlerLoader =
                config.handlerClasspath() == null
                        ? loader
                        : HandlerClassLoader.forClasspath(config.handlerClasspath(), loader);
        FunctionHandler handler = HandlerLoader.load(config.handlerClass(), handlerLoader);
        CallbackClient callbacks =
                new CallbackClient(
                        config.defaultCallback(),
                        config.callbackAttempts(),
                        config.callbackTimeout());
        RuntimeServer server = RuntimeServer.start(config, handler, callbacks);
        Log.info(
                "listening on "
                        + config.host()
                        + ":"
                        + server.port()
                        + " handler="
                        + HandlerLoader.handlerClass(handler).getName()
                        + " threads="
                        + config.threads());
        return server;
    }

    /**
     * A prewarmed instance: warms its own code paths ({@link PrewarmWarmUp}), then listens
     * without a handler; {@code environment} is where a specialization writes the function's
     * variables, {@code exit} ends the process after a failed one.
     */
    static RuntimeServer startPrewarmed(
            Map<String, String> env,
            ClassLoader loader,
            Specializer.Environment environment,
            IntConsumer exit)
            throws StartupException {
        RuntimeConfig config = RuntimeConfig.fromEnv(env);
        Log.setLevel(config.logLevel());
        int requests = warmUpRequests(env);
        long start = System.nanoTime();
        int answered = PrewarmWarmUp.run(requests, loader);
        long warmUpMs = (System.nanoTime() - start) / 1_000_000L;
        Specializer routes =
                new Specializer(
                        config,
                        env,
                        loader,
                        environment,
                        c ->
                                new CallbackClient(
                                        c.defaultCallback(),
                                        c.callbackAttempts(),
                                        c.callbackTimeout()),
                        exit);
        RuntimeServer server = RuntimeServer.startPrewarmed(config, routes);
        Log.info(
                "listening on "
                        + config.host()
                        + ":"
                        + server.port()
                        + " prewarmed: no handler until POST "
                        + Specializer.PATH
                        + " (warm-up: "
                        + answered
                        + "/"
                        + requests
                        + " invocations in "
                        + warmUpMs
                        + " ms) threads="
                        + config.threads());
        return server;
    }

    /** {@code NANOFAAS_PREWARM_WARMUP}: invocations of the warm-up, 0-100000. */
    static int warmUpRequests(Map<String, String> env) throws StartupException {
        String v = env.get(Specializer.WARMUP_ENV);
        if (v == null || v.isBlank()) {
            return PrewarmWarmUp.DEFAULT_REQUESTS;
        }
        try {
            int n = Integer.parseInt(v.trim());
            if (n >= 0 && n <= 100_000) {
                return n;
            }
        } catch (NumberFormatException e) {
            // below
        }
        throw new StartupException(
                StartupException.EXIT_CONFIG,
                Specializer.WARMUP_ENV + "=" + v + ": expected an integer between 0 and 100000");
    }

    /** Ends the process with {@code code} from another thread (the caller may be the server's). */
    private static void exitSoon(int code) {
        Thread t = new Thread(() -> System.exit(code), "nanofaas-specialize-failed");
        t.start();
    }
}
