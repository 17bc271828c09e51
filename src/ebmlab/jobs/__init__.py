"""Jobs: everything that speaks options, prints, plots or writes files for a person.

Sampling and annealed-sampling jobs, evaluation reports, pictures, plots and energy specs.
Layer: imports training and everything below it; the CLI is a thin layer over these.
"""
