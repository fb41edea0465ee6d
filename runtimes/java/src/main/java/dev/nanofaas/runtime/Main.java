package dev.nanofaas.runtime;

import java.util.Map;

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
}
