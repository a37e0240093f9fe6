//! Layers for any Fusion storage ([`fusion_core::Layer`]): encryption at rest (feature
//! `encryption`) and observability (feature `observability`).
