//! Generates the bulk that makes `big-tag` a large component: thousands of
//! distinct functions reachable through a table, and a 4 MiB data table.

use std::fmt::Write;

const FUNCTIONS: u64 = 6000;
const DATA_BYTES: usize = 4 << 20;

fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let mut code = String::new();
    for i in 0..FUNCTIONS {
        let (a, b, r) = (i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i | 1, (i % 61) + 1);
        writeln!(
            code,
            "fn g{i}(x: u64) -> u64 {{ let y = (x ^ {a}).rotate_left({r}).wrapping_mul({b}); if y & 1 == 0 {{ y ^ (y >> 29) }} else {{ y.wrapping_add({a}) ^ (y >> 17) }} }}"
        )
        .unwrap();
    }
    writeln!(code, "pub static MIXERS: [fn(u64) -> u64; {FUNCTIONS}] = [").unwrap();
    for i in 0..FUNCTIONS {
        write!(code, "g{i},").unwrap();
    }
    writeln!(code, "];").unwrap();
    std::fs::write(out.join("generated.rs"), code).unwrap();

    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let data: Vec<u8> = (0..DATA_BYTES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(out.join("data.bin"), data).unwrap();
    println!("cargo:rerun-if-changed=build.rs");
}
