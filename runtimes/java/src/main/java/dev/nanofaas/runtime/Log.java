package dev.nanofaas.runtime;

import java.io.PrintStream;
import java.time.Instant;
import java.util.Locale;
import java.util.function.Supplier;

/**
 * A minimal logger: one line per event on stderr, {@code <time> <LEVEL> nanofaas-java-runtime:
 * <message>}. java.util.logging is not used because initialising it costs cold-start time.
 *
 * <p>Nothing is logged per request at INFO; failures that a function can trigger go through a
 * {@link Limiter}.
 */
final class Log {

    enum Level {
        DEBUG,
        INFO,
        WARN,
        ERROR;

        /** Parses {@code debug|info|warn|warning|error} in any case; null when unknown. */
        static Level parse(String s) {
            switch (s.trim().toLowerCase(Locale.ROOT)) {
                case "debug":
                    return DEBUG;
                case "info":
                    return INFO;
                case "warn":
                case "warning":
                    return WARN;
                case "error":
                    return ERROR;
                default:
                    return null;
            }
        }
    }

    private static volatile Level threshold = Level.INFO;

    private Log() {}

    static void setLevel(Level level) {
        threshold = level;
    }

    static boolean enabled(Level level) {
        return level.compareTo(threshold) >= 0;
    }

    static void debug(String message) {
        log(Level.DEBUG, message, null);
    }

    static void info(String message) {
        log(Level.INFO, message, null);
    }

    static void warn(String message) {
        log(Level.WARN, message, null);
    }

    static void warn(String message, Throwable error) {
        log(Level.WARN, message, error);
    }

    static void error(String message) {
        log(Level.ERROR, message, null);
    }

    static void log(Level level, String message, Throwable error) {
        if (!enabled(level)) {
            return;
        }
        PrintStream err = System.err;
        synchronized (err) {
            err.println(Instant.now() + " " + level + " nanofaas-java-runtime: " + message);
            if (error != null) {
                error.printStackTrace(err);
            }
            err.flush();
        }
    }

    /**
     * Lets at most {@code burst} messages through per window and then counts the rest, reporting
     * the count when the next window opens. Keeps a failing function from flooding the logs.
     */
    static final class Limiter {
        private final int burst;
        private final long windowMillis;
        private long windowStart = Long.MIN_VALUE;
        private int used;
        private long suppressed;

        Limiter(int burst, long windowMillis) {
            this.burst = burst;
            this.windowMillis = windowMillis;
        }

        void warn(Supplier<String> message) {
            warn(message, null);
        }

        void warn(Supplier<String> message, Throwable error) {
            if (!enabled(Level.WARN)) {
                return;
            }
            long dropped = 0;
            synchronized (this) {
                long now = System.nanoTime() / 1_000_000;
                if (windowStart == Long.MIN_VALUE || now - windowStart >= windowMillis) {
                    windowStart = now;
                    used = 0;
                    dropped = suppressed;
                    suppressed = 0;
                }
                if (used >= burst) {
                    suppressed++;
                    return;
                }
                used++;
            }
            if (dropped > 0) {
                Log.warn("(" + dropped + " similar messages suppressed)");
            }
            Log.warn(message.get(), error);
        }
    }
}
