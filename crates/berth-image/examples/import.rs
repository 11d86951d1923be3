//! Imports a root filesystem tar into an image store and prints the summary:
//! `cargo run -p berth-image --example import -- <data-root> <rootfs.tar|-> [reference]`.

use std::time::Instant;

use berth_image::{ImageStore, ImportOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: import <data-root> <rootfs.tar|-> [reference]");
        std::process::exit(2);
    }
    let store = ImageStore::open(std::path::Path::new(&args[1])).unwrap_or_else(|e| {
        eprintln!("open: {e}");
        std::process::exit(1);
    });
    let start = Instant::now();
    let reader: Box<dyn std::io::Read> = if args[2] == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(&args[2]).expect("open tar"))
    };
    match store.import(
        reader,
        args.get(3).map(String::as_str),
        &ImportOptions::default(),
    ) {
        Ok(s) => {
            println!("{}", serde_json::to_string_pretty(&s).expect("json"));
            eprintln!("imported in {:?}", start.elapsed());
        }
        Err(e) => {
            eprintln!("import: {e} ({:?})", e.kind());
            std::process::exit(1);
        }
    }
}
