namespace RaySharp.Cli;

/// <summary>A user-facing failure: the message names the problem and the fix, and is printed without a stack trace.</summary>
internal sealed class CliException(string message, int exitCode = 1) : Exception(message)
{
    public int ExitCode { get; } = exitCode;
}
