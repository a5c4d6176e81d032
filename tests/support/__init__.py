"""What tests share: builders of events and logs, reference implementations of the views, the
integration harness and waiting on conditions. Test modules import from here, never from each
other."""
