"""lens_steer benchmarks (make bench); see benchmarks/README.md. Not part of the installed package."""
