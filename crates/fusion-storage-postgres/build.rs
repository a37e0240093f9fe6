//! Rebuilds the crate when a migration changes or is added: `sqlx::migrate!` embeds the
//! files, and cargo does not otherwise know they are inputs.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
