namespace RaySharp;

/// <summary>Remote functions: <c>Ray.Task(f).Remote(args)</c>.</summary>
public static partial class Ray
{
    /// <summary>A remote task of a static method, static local function or lambda that captures nothing.</summary>
    public static RemoteFunction<TResult> Task<TResult>(Func<TResult> function, TaskOptions? options = null) => new(function, options ?? new TaskOptions());

    public static RemoteFunction<T1, TResult> Task<T1, TResult>(Func<T1, TResult> function, TaskOptions? options = null) => new(function, options ?? new TaskOptions());

    public static RemoteFunction<T1, T2, TResult> Task<T1, T2, TResult>(Func<T1, T2, TResult> function, TaskOptions? options = null) => new(function, options ?? new TaskOptions());

    public static RemoteFunction<T1, T2, T3, TResult> Task<T1, T2, T3, TResult>(Func<T1, T2, T3, TResult> function, TaskOptions? options = null) => new(function, options ?? new TaskOptions());

    /// <summary>A remote task of an async function: the reference is to the awaited result.</summary>
    public static RemoteFunction<TResult> Task<TResult>(Func<Task<TResult>> function, TaskOptions? options = null) => new(function, options ?? new TaskOptions());

    public static RemoteFunction<T1, TResult> Task<T1, TResult>(Func<T1, Task<TResult>> function, TaskOptions? options = null) => new(function, options ?? new TaskOptions());

    public static RemoteFunction<T1, T2, TResult> Task<T1, T2, TResult>(Func<T1, T2, Task<TResult>> function, TaskOptions? options = null) => new(function, options ?? new TaskOptions());

    public static RemoteFunction<T1, T2, T3, TResult> Task<T1, T2, T3, TResult>(Func<T1, T2, T3, Task<TResult>> function, TaskOptions? options = null) => new(function, options ?? new TaskOptions());
}
