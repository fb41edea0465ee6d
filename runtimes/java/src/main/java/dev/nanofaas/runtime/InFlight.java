package dev.nanofaas.runtime;

/**
 * Counts invocations in progress so that shutdown can stop taking new ones and wait, for a
 * bounded time, for the running ones to finish.
 */
final class InFlight {

    private int running;
    private boolean draining;

    /** Registers an invocation; false once draining has begun (the caller must answer 503). */
    synchronized boolean enter() {
        if (draining) {
            return false;
        }
        running++;
        return true;
    }

    synchronized void exit() {
        running--;
        if (running == 0) {
            notifyAll();
        }
    }

    /**
     * Refuses new invocations from now on and waits until none is running or {@code timeoutMillis}
     * has passed.
     *
     * @return true when no invocation is running any more
     */
    synchronized boolean drain(long timeoutMillis) {
        draining = true;
        long deadline = System.nanoTime() + timeoutMillis * 1_000_000L;
        while (running > 0) {
            long left = (deadline - System.nanoTime()) / 1_000_000L;
            if (left <= 0) {
                return false;
            }
            try {
                wait(left);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return running == 0;
            }
        }
        return true;
    }

    synchronized int running() {
        return running;
    }
}
