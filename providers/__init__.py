"""The provider-abstraction layer: one small interface per kind of provider."""
