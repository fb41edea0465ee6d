package dev.nanofaas.runtime;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.Map;
import org.junit.jupiter.api.Test;

class RuntimeConfigTest {

    @Test
    void defaults() throws Exception {
        RuntimeConfig c = RuntimeConfig.fromEnv(Map.of());
        assertEquals("127.0.0.1", c.host());
        assertEquals(8080, c.port());
        assertEquals(1, c.threads());
        assertEquals(16 * 1024 * 1024, c.maxBodyBytes());
        assertNull(c.handlerClass());
        assertNull(c.defaultExecutionId());
        assertNull(c.defaultCallback());
        assertEquals(3, c.callbackAttempts());
        assertEquals(Duration.ofMillis(2000), c.callbackTimeout());
        assertEquals(Duration.ofMillis(5000), c.shutdownGrace());
        assertEquals(Log.Level.INFO, c.logLevel());
    }

    @Test
    void valuesAreRead() throws Exception {
        RuntimeConfig c =
                RuntimeConfig.fromEnv(
                        Map.of(
                                "HOST", "0.0.0.0",
                                "PORT", "9000",
                                "THREADS", "4",
                                "FUNCTION_HANDLER", " com.example.Fn ",
                                "EXECUTION_ID", "e-1",
                                "CALLBACK_URL", "http://cp:8080/v1/internal/executions",
                                "CALLBACK_TOKEN", "tok",
                                "CALLBACK_ATTEMPTS", "5",
                                "LOG_LEVEL", "WARN"));
        assertEquals("0.0.0.0", c.host());
        assertEquals(9000, c.port());
        assertEquals(4, c.threads());
        assertEquals("com.example.Fn", c.handlerClass());
        assertEquals("e-1", c.defaultExecutionId());
        assertEquals(
                new CallbackClient.Target("http://cp:8080/v1/internal/executions", "tok"),
                c.defaultCallback());
        assertEquals(5, c.callbackAttempts());
        assertEquals(Log.Level.WARN, c.logLevel());
    }

    @Test
    void blankValuesCountAsUnset() throws Exception {
        RuntimeConfig c = RuntimeConfig.fromEnv(Map.of("PORT", " ", "CALLBACK_URL", "", "EXECUTION_ID", ""));
        assertEquals(8080, c.port());
        assertNull(c.defaultCallback());
        assertNull(c.defaultExecutionId());
    }

    @Test
    void badValuesAreStartupErrorsNamingTheVariable() {
        String[][] cases = {
            {"PORT", "http"},
            {"PORT", "65536"},
            {"PORT", "-1"},
            {"THREADS", "0"},
            {"THREADS", "1.5"},
            {"MAX_BODY_BYTES", "0"},
            {"CALLBACK_ATTEMPTS", "0"},
            {"CALLBACK_TIMEOUT_MS", "99999999999"},
            {"SHUTDOWN_GRACE_MS", "soon"},
            {"CALLBACK_URL", "ftp://host/cb"},
            {"CALLBACK_URL", "not a url"},
            {"CALLBACK_URL", "http:///path-only"},
            {"LOG_LEVEL", "loud"},
            {"EXECUTION_ID", "a/b"},
        };
        for (String[] c : cases) {
            StartupException e =
                    assertThrows(
                            StartupException.class,
                            () -> RuntimeConfig.fromEnv(Map.of(c[0], c[1])),
                            c[0] + "=" + c[1]);
            assertEquals(StartupException.EXIT_CONFIG, e.exitCode());
            assertTrue(e.getMessage().startsWith(c[0] + "="), e.getMessage());
        }
    }
}
