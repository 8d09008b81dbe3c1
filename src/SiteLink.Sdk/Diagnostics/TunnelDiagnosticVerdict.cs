namespace SiteLink;

/// <summary>How one step of a <see cref="TunnelDiagnostics"/> run went.</summary>
public enum TunnelDiagnosticVerdict
{
    /// <summary>The step worked.</summary>
    Passed = 0,

    /// <summary>
    /// The step failed: the agent cannot connect this way. <see cref="TunnelDiagnosticStep.Error"/> says what kind of
    /// failure it is and <see cref="TunnelDiagnosticStep.Advice"/> what to do. The steps after it are
    /// <see cref="Skipped"/>.
    /// </summary>
    Failed = 1,

    /// <summary>
    /// The step worked, but something deserves attention (a certificate about to expire, a relay without TLS);
    /// <see cref="TunnelDiagnosticStep.Advice"/> says what.
    /// </summary>
    Warning = 2,

    /// <summary>The step was not run: an earlier one failed, or it does not apply (the detail says which).</summary>
    Skipped = 3,
}
