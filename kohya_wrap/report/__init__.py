"""The last stage: look at what a run made (report.html, runs table), test it (sample), read any LoRA (inspect)."""
