#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| (nanofaas_fuzz::targets::target("http_response").unwrap().run)(data));
