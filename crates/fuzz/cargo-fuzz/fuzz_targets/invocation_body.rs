#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| (nanofaas_fuzz::targets::target("invocation_body").unwrap().run)(data));
