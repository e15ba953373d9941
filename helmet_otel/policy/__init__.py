"""Policies (tool access control) and security detectors.

- `rules`: the policy's data model (rules, conditions, detector settings);
- `loader`: a TOML policy file into a `Policy`, every problem with its line;
- `engine`: pure, deterministic evaluation of a request against the rules;
- `detectors`: pure security checks (sensitive arguments, tool definition drift);
- `pins`: the pinned tool definitions of each server (the store keeps them);
- `interceptor`: the relay-side interceptor that enforces and reports.
"""
