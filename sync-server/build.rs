// refinery's `embed_migrations!` reads the migrations directory at compile
// time but does not tell cargo, so a new migration file would not rebuild the
// server without this.
fn main() {
    println!("cargo:rerun-if-changed=src/postgres/migrations");
}
