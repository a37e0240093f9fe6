//! Node.js and npm, which the MCP suites use to install and run the reference MCP servers
//! from npm (`@modelcontextprotocol/server-everything` and `server-filesystem`). The tests
//! install the servers themselves into a cache directory; this makes sure they can.

use anyhow::{Result, bail};

use super::{apt_install, on_path};

const INSTALL_HINT: &str = "install Node.js 20 or later with npm (Debian/Ubuntu: `apt-get \
    install nodejs npm`, or https://nodejs.org); the MCP suites run the reference MCP servers \
    from npm";

/// Checks that `node` and `npm` are on the PATH, installing Debian's packages when they
/// are missing and this runs as root; fails naming what to install otherwise.
pub fn node_and_npm() -> Result<()> {
    for (program, package) in [("node", "nodejs"), ("npm", "npm")] {
        if !on_path(program) {
            apt_install(package, INSTALL_HINT)?;
        }
        if !on_path(program) {
            bail!("`{program}` is still not on the PATH: {INSTALL_HINT}");
        }
    }
    Ok(())
}
