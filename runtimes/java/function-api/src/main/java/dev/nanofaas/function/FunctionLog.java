package dev.nanofaas.function;

import java.io.PrintStream;

/**
 * Lines a handler writes as those of the invocation it serves: nanofaas keeps them with the
 * execution ({@code nanofaas exec logs ID}), also when the instance serves several invocations
 * at once, where a plain {@code System.out.println} cannot be attributed.
 *
 * <p>When nanofaas asks for it ({@code NANOFAAS_LOG_TAGS=1}, set by its providers) each line is
 * written on stderr as {@code @exec:<execution id> <text>}; the watchdog files it under that
 * execution and strips the tag. Otherwise the text is written as is.
 */
public final class FunctionLog {

    static final String TAG = "@exec:";
    private static final boolean TAGS = "1".equals(System.getenv("NANOFAAS_LOG_TAGS"));

    private FunctionLog() {}

    /** Writes {@code text} (each of its lines) as a line of {@code request}'s execution. */
    public static void line(Request request, String text) {
        PrintStream err = System.err;
        String out = tag(TAGS, request == null ? null : request.executionId(), text);
        synchronized (err) {
            err.println(out);
            err.flush();
        }
    }

    /** {@code text} with each line tagged by {@code executionId} when tags are on. */
    public static String tag(boolean tags, String executionId, String text) {
        String t = text == null ? "null" : text;
        if (!tags || executionId == null || executionId.isEmpty() || executionId.contains(" ")) {
            return t;
        }
        StringBuilder b = new StringBuilder();
        for (String l : t.split("\n", -1)) {
            if (b.length() > 0) {
                b.append('\n');
            }
            b.append(TAG).append(executionId).append(' ').append(l);
        }
        return b.toString();
    }
}
