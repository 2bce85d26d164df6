"""Deploy the Euglena platform stage by stage and prove each stage with pytest."""
