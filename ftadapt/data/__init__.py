"""Datasets in their official layouts, the synthetic two-domain set, shared transforms and the dataset doctor."""
