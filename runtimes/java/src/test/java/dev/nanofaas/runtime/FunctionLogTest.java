package dev.nanofaas.runtime;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;

class FunctionLogTest {

    @Test
    void linesAreTaggedOnlyWhenAsked() {
        assertEquals("hi", FunctionLog.tag(false, "e1", "hi"));
        assertEquals("@exec:e1 hi", FunctionLog.tag(true, "e1", "hi"));
        assertEquals("@exec:e1 a\n@exec:e1 b", FunctionLog.tag(true, "e1", "a\nb"));
        assertEquals("hi", FunctionLog.tag(true, null, "hi"));
    }
}
