"""Dynamic filter gating (FTWT, Elkerdawy et al. 2022): the gated network and its mask
predictors, real dynamic execution, the gating environment (``prune_env/Gate-v0``), its
report and the fixed-budget policy."""
