"""The six training methods, each a composition of loss terms with a declared schedule."""
