#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| (nanofaas_fuzz::targets::target("manifest").unwrap().run)(data));
