namespace SiteLink.Relay.Hosting;

/// <summary>
/// The relay could not start for a reason outside its configuration's validity, e.g. an address already in use. The
/// message names what and where, in one line.
/// </summary>
public sealed class RelayStartException : Exception
{
    /// <summary>Creates the exception.</summary>
    public RelayStartException(string message, Exception? innerException = null)
        : base(message, innerException)
    {
    }
}
