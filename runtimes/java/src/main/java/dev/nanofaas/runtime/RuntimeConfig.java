package dev.nanofaas.runtime;

import java.time.Duration;
import java.util.Map;

/**
 * The runtime's configuration, read from environment variables. Every variable, its default and
 * its range is listed in the README; a blank value counts as unset. A malformed value is a
 * startup error ({@link StartupException#EXIT_CONFIG}), never silently replaced by a default.
 */
record RuntimeConfig(
        String host,
        int port,
        int threads,
        int maxBodyBytes,
        String handlerClass,
        String handlerClasspath,
        String defaultExecutionId,
        String defaultCallbackUrl,
        String defaultCallbackToken,
        int callbackAttempts,
        Duration callbackTimeout,
        Duration shutdownGrace,
        Log.Level logLevel) {

    static final String DEFAULT_HOST = "127.0.0.1";
    static final int DEFAULT_PORT = 8080;
    static final int DEFAULT_THREADS = 1;
    static final int DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024;
    static final int DEFAULT_CALLBACK_ATTEMPTS = 3;
    static final int DEFAULT_CALLBACK_TIMEOUT_MS = 2000;
    static final int DEFAULT_SHUTDOWN_GRACE_MS = 5000;

    static RuntimeConfig fromEnv(Map<String, String> env) throws StartupException {
        String host = string(env, "HOST");
        String callbackUrl = string(env, "CALLBACK_URL");
        if (callbackUrl != null) {
            String problem = CallbackClient.checkCallbackUrl(callbackUrl);
            if (problem != null) {
                throw invalid("CALLBACK_URL", callbackUrl, problem);
            }
        }
        String logLevel = string(env, "LOG_LEVEL");
        Log.Level level = logLevel == null ? Log.Level.INFO : Log.Level.parse(logLevel);
        if (level == null) {
            throw invalid("LOG_LEVEL", logLevel, "expected one of debug, info, warn, error");
        }
        String executionId = string(env, "EXECUTION_ID");
        if (executionId != null) {
            String problem = checkExecutionId(executionId);
            if (problem != null) {
                throw invalid("EXECUTION_ID", executionId, problem);
            }
        }
        return new RuntimeConfig(
                host == null ? DEFAULT_HOST : host,
                integer(env, "PORT", DEFAULT_PORT, 0, 65535),
                integer(env, "THREADS", DEFAULT_THREADS, 1, 256),
                integer(env, "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, 1, Integer.MAX_VALUE - 8),
                string(env, "FUNCTION_HANDLER"),
                string(env, "HANDLER_CLASSPATH"),
                executionId,
                callbackUrl,
                string(env, "CALLBACK_TOKEN"),
                integer(env, "CALLBACK_ATTEMPTS", DEFAULT_CALLBACK_ATTEMPTS, 1, 10),
                millis(env, "CALLBACK_TIMEOUT_MS", DEFAULT_CALLBACK_TIMEOUT_MS, 1),
                millis(env, "SHUTDOWN_GRACE_MS", DEFAULT_SHUTDOWN_GRACE_MS, 0),
                level);
    }

    /** The callback target configured by environment, or null without {@code CALLBACK_URL}. */
    CallbackClient.Target defaultCallback() {
        return defaultCallbackUrl == null
                ? null
                : new CallbackClient.Target(defaultCallbackUrl, defaultCallbackToken);
    }

    /**
     * Execution ids end up in the callback URL's path, so they must not contain what would change
     * the URL: whitespace, control characters, '/', '?', '#', '%' or '\'.
     *
     * @return null when valid, else why not
     */
    static String checkExecutionId(String id) {
        if (id.length() > 256) {
            return "longer than 256 characters";
        }
        for (int i = 0; i < id.length(); i++) {
            char c = id.charAt(i);
            if (c <= ' ' || c == 0x7f || "/?#%\\".indexOf(c) >= 0) {
                return "must not contain whitespace, control characters, "
                        + "'/', '?', '#', '%' or '\\'";
            }
        }
        return null;
    }

    private static String string(Map<String, String> env, String name) {
        String v = env.get(name);
        return v == null || v.isBlank() ? null : v.trim();
    }

    private static Duration millis(Map<String, String> env, String name, int dflt, int min)
            throws StartupException {
        return Duration.ofMillis(integer(env, name, dflt, min, 600_000));
    }

    private static int integer(Map<String, String> env, String name, int dflt, int min, int max)
            throws StartupException {
        String v = string(env, name);
        if (v == null) {
            return dflt;
        }
        long n;
        try {
            n = Long.parseLong(v);
        } catch (NumberFormatException e) {
            throw invalid(name, v, "expected an integer between " + min + " and " + max);
        }
        if (n < min || n > max) {
            throw invalid(name, v, "expected an integer between " + min + " and " + max);
        }
        return (int) n;
    }

    private static StartupException invalid(String name, String value, String why) {
        return new StartupException(StartupException.EXIT_CONFIG, name + "=" + value + ": " + why);
    }
}
