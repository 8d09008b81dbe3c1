namespace SiteLink;

/// <summary>Why the relay refused to bind an endpoint.</summary>
public enum BindErrorCode
{
    /// <summary>The relay gave no reason this SDK knows.</summary>
    Unknown = 0,

    /// <summary>The authtoken's access list does not allow this endpoint name.</summary>
    Denied = 1,

    /// <summary>Another agent session already serves this name (and pooling is off).</summary>
    NameTaken = 2,

    /// <summary>The name is malformed or the request was invalid.</summary>
    Invalid = 3,

    /// <summary>The session holds the maximum number of endpoints the relay allows.</summary>
    LimitExceeded = 4,

    /// <summary>
    /// The name is served by a pool and this bind did not set <see cref="EndpointOptions.Pooling"/>, or it is held
    /// without pooling and this bind set it: every member of a pool binds with pooling on.
    /// </summary>
    PoolingMismatch = 5,
}

/// <summary>The relay refused to bind an endpoint. <see cref="Code"/> says why.</summary>
public sealed class TunnelBindException : TunnelException
{
    /// <summary>Creates the exception.</summary>
    public TunnelBindException(string endpointName, BindErrorCode code, string message)
        : base(message)
    {
        EndpointName = endpointName;
        Code = code;
    }

    /// <summary>The endpoint name that was refused.</summary>
    public string EndpointName { get; }

    /// <summary>Why it was refused.</summary>
    public BindErrorCode Code { get; }

    private protected override TunnelError DefaultError =>
        Code is BindErrorCode.Denied or BindErrorCode.LimitExceeded ? TunnelError.PermissionDenied : TunnelError.Unknown;
}
