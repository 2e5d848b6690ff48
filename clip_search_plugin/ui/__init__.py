"""What the analyst sees: the dock (.ui, signals out, setters in), the dialogs, map tools and the message bar."""
