"""What each table and figure of the paper runs: the paper's numbers and rows (`paper`), the paper's setup as
transcribed with a citation per value (`spec`), and the jobs a profile runs for every table (`jobs`): the plan that
`diffcore plan` prints, the notebooks and `reproduce` run, and a test checks against the spec."""
