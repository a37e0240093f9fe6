//! Tools from Model Context Protocol servers for the Fusion agent.
