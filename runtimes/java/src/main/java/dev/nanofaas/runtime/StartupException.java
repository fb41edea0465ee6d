package dev.nanofaas.runtime;

/** A reason the runtime cannot start, with the process exit code it maps to. */
final class StartupException extends Exception {

    private static final long serialVersionUID = 1L;

    /** Invalid environment configuration (a malformed or out-of-range value). */
    static final int EXIT_CONFIG = 2;
    /** No usable handler: none or several found, not loadable, not a FunctionHandler, ... */
    static final int EXIT_HANDLER = 3;
    /** The server could not listen on HOST:PORT. */
    static final int EXIT_LISTEN = 4;

    private final int exitCode;

    StartupException(int exitCode, String message) {
        super(message);
        this.exitCode = exitCode;
    }

    int exitCode() {
        return exitCode;
    }
}
