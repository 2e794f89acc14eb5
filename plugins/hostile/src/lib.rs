//! Test plugin: misbehaves on purpose, chosen by each record's value, so the
//! host's limits, error policy and sandbox can be shown to hold. Any other
//! value is emitted as `ok:<value>` (same key) to route config `output`.
//!
//! | value        | does |
//! |--------------|------|
//! | `loop`       | spins forever |
//! | `eat`        | allocates memory without bound |
//! | `trap`       | panics (a trap) |
//! | `poison`     | returns `poison(index)` for itself |
//! | `fatal`      | returns `fatal` |
//! | `retry-once` | returns `retry` the first time an instance sees it |
//! | `flood`      | emits 1000 records |
//! | `print`      | writes a line to stdout and one to stderr |
//! | `spam`       | writes 10000 lines to stdout |
//! | `escape`     | tries the filesystem, environment, arguments and network, and emits what happened |

use std::cell::Cell;

use linecook_guest::{Batch, Context, Error, Handler, emit, export_handler, state};

struct Hostile {
    output: String,
    retried: Cell<bool>,
}

impl Handler for Hostile {
    fn init(ctx: &Context) -> Result<Self, String> {
        let output = ctx
            .config("output")
            .ok_or("hostile needs route config `output`")?;
        Ok(Hostile {
            output: output.to_owned(),
            retried: Cell::new(false),
        })
    }

    fn handle(&mut self, batch: Batch<'_>) -> Result<(), Error> {
        for (index, record) in batch.iter().enumerate() {
            match record.value {
                b"loop" => {
                    let mut n = 0u64;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                b"eat" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                b"trap" => panic!("hostile traps on purpose"),
                b"poison" => {
                    return Err(Error::Poison {
                        index: index as u32,
                        message: format!("offset {} is poison", record.offset),
                    });
                }
                b"fatal" => return Err(Error::Fatal("hostile gives up".into())),
                b"scan" => {
                    // Read-your-writes across the boundary: writes the SDK
                    // may hold back, reads and scans the host answers.
                    state::set(b"s/a", b"1");
                    state::set(b"s/b", b"2");
                    state::delete(b"s/a");
                    let first: Vec<String> = state::scan(b"s/")
                        .map(|(k, v)| {
                            format!(
                                "{}={}",
                                String::from_utf8_lossy(&k),
                                String::from_utf8_lossy(&v)
                            )
                        })
                        .collect();
                    state::set(b"s/c", b"3");
                    let b = state::get(b"s/b").map(|v| String::from_utf8_lossy(&v).into_owned());
                    let a = state::get(b"s/a");
                    let second = state::scan(b"s/").count();
                    let report = format!("scan:{} b:{b:?} a:{a:?} then:{second}", first.join(","));
                    emit::send(&self.output, record.key, report.as_bytes());
                }
                b"retry-once" if !self.retried.get() => {
                    self.retried.set(true);
                    return Err(Error::Retry("hostile wants one more try".into()));
                }
                b"print" => {
                    println!("hostile says hello on stdout");
                    eprintln!("hostile says hello on stderr");
                }
                b"spam" => {
                    for i in 0..10_000 {
                        println!("spam line {i}");
                    }
                }
                b"flood" => {
                    for i in 0..1000 {
                        emit::send(&self.output, record.key, format!("flood {i}").as_bytes());
                    }
                }
                b"escape" => {
                    let fs = std::fs::read_dir("/").map(|_| "OPEN".to_owned());
                    let file = std::fs::read("/etc/passwd").map(|_| "READ".to_owned());
                    let env = std::env::var("HOME").map(|v| format!("HOME={v}"));
                    let vars = std::env::vars().count();
                    let args = std::env::args().count();
                    let net = std::net::TcpStream::connect("127.0.0.1:22")
                        .map(|_| "CONNECTED".to_owned());
                    let report = format!(
                        "fs={} file={} env={} vars={vars} args={args} net={}",
                        outcome(fs),
                        outcome(file),
                        outcome(env),
                        outcome(net)
                    );
                    emit::send(&self.output, record.key, report.as_bytes());
                }
                value => {
                    let mut line = b"ok:".to_vec();
                    line.extend_from_slice(value);
                    emit::send(&self.output, record.key, &line);
                }
            }
        }
        Ok(())
    }
}

fn outcome<E: std::fmt::Display>(result: Result<String, E>) -> String {
    match result {
        Ok(got) => got,
        Err(e) => format!("denied({e})"),
    }
}

export_handler!(Hostile);
