"""Test harness: throwaway real servers and our services as real processes."""
